"""Stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test downloads get-pip.py from a CI host this machine cannot reach, then
runs it as ``python get_pip.py <pip options> pip==X setuptools==Y ...`` inside each
sanity venv. PyPI itself is reachable, so this stand-in installs pip from the
interpreter's own ``ensurepip`` and then lets that pip install the exact versions
ansible-test asked for. scripts/sanity.sh seeds ansible-test's cache with it.
"""
import subprocess
import sys


def main():
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
    # get-pip.py's own switches mean nothing to pip install.
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    main()
