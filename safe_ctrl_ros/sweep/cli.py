"""safe-ctrl-sweep (placeholder while the package is written)."""


def main(argv: list[str] | None = None) -> int:
    return 0
