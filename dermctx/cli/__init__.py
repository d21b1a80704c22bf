"""The dermctx command line: one command per step of the data flow, each a thin wrapper over the Python API.

Tables: every command that reads a TABLE takes a canonical lesion table or any registered layout
(ISIC 2018/2019/2020/2024, ISIC archive, HAM10000, PAD-UFES-20), as CSV, .csv.gz or Parquet,
says which layout it read, and takes --source, --labels, --image-dir, --unknown-patients and
--lesion-ids.

Steps chain, without pandas in between:
  split writes folds.csv; bench and train reuse it with --folds FILE (or a column: --fold-col COL)
  train writes out-of-fold scores; fit and score read its folder with --cnn DIR
  any CNN's scores join by image id with --scores FILE --score-col COL (fit, score, bench)
  embed writes a store; fit, score and bench join it with --embeddings DIR
A row of TABLE that a join cannot fill is listed in the errors table, never dropped silently.

Exit codes, the same for every command:
  0  all done
  1  some items failed: the others were done; the failed ones are listed in the errors
     table (also when every item failed)
  2  bad usage or bad input (a wrong option; a file that is missing, unreadable, unwritable
     or not what was expected): one line, "dermctx COMMAND: error: MESSAGE"
  3  internal error, a dermctx bug: one line, "dermctx COMMAND: internal error: ...";
     DERMCTX_DEBUG=1 shows the traceback

Errors table (columns image_id, row, path, stage, message; row counts rows of TABLE from 0):
beside a file output, named after it (--out scores.csv: scores.errors.csv); inside a folder
output (--out DIR: DIR/errors.csv); on stderr when the result goes to stdout. A stale one
from an earlier run into the same output is removed.

Progress bars are drawn only when stderr is a terminal; --progress or --no-progress forces
them on or off. Options whose help says "default: the library's" are not passed when left
out, so each default lives in one place, the Python API.
"""

from ._main import main

__all__ = ["main"]
