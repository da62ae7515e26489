"""Writing test files: lines as UTF-8 text, optionally gzip-compressed, or raw bytes."""

import gzip


def write_lines(path, lines, gz=False, raw=None):
    """``lines`` (each + newline) as UTF-8, or the bytes ``raw``, into ``path`` (gzip if ``gz``); returns ``path``."""
    data = raw if raw is not None else "".join(line + "\n" for line in lines).encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path
