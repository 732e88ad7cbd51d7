"""The scenario's trees: a large tree (v1), v2 with one file changed, v3 without its health marker, v4.

    python make_trees.py DIR     -> DIR/v1 ... DIR/v4 (fixed contents and times: the same image every run)
"""
import os
import sys

FILES = 200
FILE_SIZE = 32768
CHANGED = {"v1": (), "v2": (17,), "v3": (17, 18), "v4": (17, 19)}


def make(root, version):
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    for n in range(FILES):
        seed = ("%s-%d" % (version if n in CHANGED[version] else "base", n)).encode()
        with open(os.path.join(root, "data", "f%03d" % n), "wb") as f:
            f.write((seed * (FILE_SIZE // len(seed) + 1))[:FILE_SIZE])
    with open(os.path.join(root, "VERSION"), "w") as f:
        f.write(version + "\n")
    if version != "v3":
        with open(os.path.join(root, "healthy"), "w") as f:
            f.write("yes\n")
    for path, dirs, files in os.walk(root):
        for name in dirs + files:
            os.utime(os.path.join(path, name), (1700000000, 1700000000), follow_symlinks=False)
    os.utime(root, (1700000000, 1700000000))


def main():
    top = sys.argv[1]
    for version in sorted(CHANGED):
        make(os.path.join(top, version), version)


if __name__ == "__main__":
    main()
