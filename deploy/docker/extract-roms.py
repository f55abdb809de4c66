"""Copies the ROMs listed in roms.md5 out of an ale-py wheel, checking each md5."""
import hashlib
import pathlib
import sys
import zipfile

wheel_dir, table, out = (pathlib.Path(a) for a in sys.argv[1:4])
wheel = next(wheel_dir.glob("ale_py-*.whl"))
out.mkdir(parents=True, exist_ok=True)
count = 0
with zipfile.ZipFile(wheel) as z:
    for line in table.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        md5, name = line.split(None, 1)
        data = z.read(f"ale_py/roms/{name}")
        got = hashlib.md5(data).hexdigest()
        if got != md5:
            sys.exit(f"{name} from {wheel.name} has md5 {got}, expected {md5}")
        (out / name).write_bytes(data)
        count += 1
print(f"{count} ROMs copied from {wheel.name} and checked")
