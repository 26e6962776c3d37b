import sys

from research.backend.native import main
from research.core.errors import UserError

try:
  sys.exit(main(sys.argv))
except UserError as e:
  print(f"error: {e}", file=sys.stderr)
  sys.exit(2)
