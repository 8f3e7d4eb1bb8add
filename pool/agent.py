"""Compatibility: machines launched by an earlier version run ``python -m pool.agent``."""

from pool.node.agent import main

if __name__ == "__main__":
    main()
