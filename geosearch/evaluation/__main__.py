"""`python -m geosearch.evaluation`: the same as `geosearch eval`."""

from geosearch.evaluation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
