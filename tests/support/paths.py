"""Where things are, for tests at any depth under tests/: the repository root, tests/, tests/fixtures/."""
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"
