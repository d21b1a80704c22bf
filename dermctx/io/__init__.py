"""Readers and writers, one module per source: ISIC 2020, HAM10000, DICOM, image files."""
