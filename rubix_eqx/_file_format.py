"""Our versioned HDF5 files: open one for reading and check its `format` tag and
`format_version` (galaxy, SSP grid and cube files all start this way)."""

from pathlib import Path

import h5py


def format_version(path, attrs) -> int | None:
    """The integer `format_version` attribute of a file (None if absent); a ValueError
    naming the file if it is not an integer."""
    raw = attrs.get("format_version")
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: `format_version` must be an integer; got {raw!r}.") from None


def open_hdf5(path: str | Path, what: str) -> h5py.File:
    """`path` opened read-only; `FileNotFoundError` ("`what` file not found: path") if it
    is missing, `ValueError` naming it if it is not HDF5."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what[:1].upper()}{what[1:]} file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e}).") from None


def open_format(path: str | Path, fmt: str, version: int, what: str, hint: str = "") -> h5py.File:
    """`path` opened read-only after checking that its root attributes say
    `format = fmt` and `format_version = version`.

    **Arguments:**

    - `path`: the file.
    - `fmt`, `version`: the expected tag and version, e.g. `"rubix_eqx.galaxy"`, 1.
    - `what`: the kind of file for messages, e.g. `"galaxy"`, `"SSP grid"`, `"cube"`.
    - `hint`: appended to the wrong-`format` message (e.g. which reader to use instead).

    **Returns:** the open `h5py.File` (the caller closes it, e.g. `with ... as f:`).
    Raises `FileNotFoundError` or a `ValueError` naming the file and the problem.
    """
    f = open_hdf5(path, what)
    try:
        got = f.attrs.get("format")
        if got != fmt:
            raise ValueError(
                f"{path}: attribute `format` is {got!r}, expected {fmt!r} (it is not a `{fmt}` "
                f"file{hint})."
            )
        found = format_version(path, f.attrs)
        if found is None:
            raise ValueError(
                f"{path}: {what} file has no `format_version` (this rubix_eqx reads "
                f"format_version {version})."
            )
        if found != version:
            newer = found > version
            advice = "upgrade rubix_eqx" if newer else "rewrite it with a matching version"
            raise ValueError(
                f"{path}: {what} `format_version` {found} is not supported (this version "
                f"reads {version}): `format_version` {found}, {'newer' if newer else 'older'} "
                f"than the format_version {version} this rubix_eqx reads; {advice}."
            )
    except ValueError:
        f.close()
        raise
    return f
