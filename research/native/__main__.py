import sys

from research.core.errors import UserError
from research.native import main

try:
  sys.exit(main(sys.argv))
except UserError as e:
  print(f"error: {e}", file=sys.stderr)
  sys.exit(2)
