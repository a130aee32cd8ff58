"""What the CLI and parity scripts share: running lamina, recording checks, the closing line."""
import subprocess
import sys


class Report:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append(bool(ok))
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}".rstrip())
        return bool(ok)

    def finish(self):
        passed = sum(self.results)
        print(f"{passed} passed, {len(self.results) - passed} failed")
        sys.exit(0 if self.results and all(self.results) else 1)


def runner(lamina, echo_failures=True):
    def run(*args, stdin=None):
        p = subprocess.run([lamina, *args], capture_output=True, text=True, input=stdin, timeout=300)
        if p.returncode != 0 and echo_failures:
            print(f"command failed ({p.returncode}): lamina {' '.join(args)[:200]}\n{p.stderr}")
        return p

    return run
