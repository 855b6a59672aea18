STOP_END: int
STOP_LIMIT: int
STOP_DIR: int
STOP_LINK: int
STOP_ERROR: int
STOP_BIG: int
MAX_BUCKETS: int

class Dir:
    def __init__(self, fd: int) -> None: ...
    def scan(
        self,
        limit: int,
        follow: bool,
        linked: list[tuple[int, int, int, int, str]],
        key: str,
        totals: list[int] | None = None,
        bounds: tuple[int, ...] | None = None,
        big: int = -1,
        /,
    ) -> tuple[int, int, int, int, int, str, int, int, tuple[int, int]]: ...
    def close(self) -> None: ...
