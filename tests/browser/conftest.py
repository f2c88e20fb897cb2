import sys
from pathlib import Path

# The fake engine and media helpers live with the server tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

