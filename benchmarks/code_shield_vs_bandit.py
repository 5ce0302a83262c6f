"""herd's code shield against bandit on the same labelled Python samples (issue 17, "Measure").

    python benchmarks/code_shield_vs_bandit.py [--bandit benchmarks/.bandit-env/bin/bandit] [--reps 30]

The samples are written here, from templates: each insecure *core* (a few lines with one weakness,
labelled with the CWE it should trigger) and each secure *look-alike* (the safe spelling of the same
task: list-form subprocess, yaml.safe_load, parameterised SQL, secrets, ...) is placed in a realistic
module, alternately a request handler function and a service-class method, with the imports it needs.
The last five insecure cores are weaknesses that bandit has plugins for and herd's rule list (issue 17)
does not name, added so that the set is not only what herd was written for. Both tools see the same
files. Reported:

  recall (any severity)     insecure samples with at least one finding, any severity
  recall (CWE)              ... with a finding whose CWE is the label (or the peer's spelling of it,
                            EQUIVALENT below: bandit files XXE and yaml.load under CWE-20)
  FP (medium+)              secure samples with a finding of severity medium or above
  latency                   herd's scan() per sample (p50/p95 over reps), and per file on herd's own
                            source tree (larger inputs)

bandit runs in its own venv (benchmarks/.bandit-env: `python -m venv` + `pip install bandit`), as a peer;
herd does not depend on it. Caveat: the same person wrote herd's rules and these samples."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from host import describe  # noqa: E402
from herd.safety.code_shield import builtin_rules, scan  # noqa: E402

# (label, imports, body) -- body uses the handler's arguments: user, data, path, cmd, host, url, expr, dest
INSECURE: list[tuple[str, str, str]] = [
    ("CWE-78", "import subprocess", "out = subprocess.run(f'ping -c 1 {host}', shell=True, capture_output=True)"),
    ("CWE-78", "import subprocess", "proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE)"),
    ("CWE-78", "import os", "os.system('tar czf /backups/site.tgz ' + path)"),
    ("CWE-78", "import os", "out = os.popen('grep ' + user + ' /var/log/app.log').read()"),
    ("CWE-78", "import subprocess as sp", "listing = sp.check_output('ls -l ' + path, shell=True)"),
    ("CWE-78", "from os import system", "system(cmd)"),
    ("CWE-95", "", "result = eval(expr)"),
    ("CWE-95", "", "exec(data)"),
    ("CWE-95", "", "total = eval('sum([' + data + '])')"),
    ("CWE-502", "import pickle", "obj = pickle.loads(data)"),
    ("CWE-502", "import pickle", "with open(path, 'rb') as f:\n    state = pickle.load(f)"),
    ("CWE-502", "import yaml", "config = yaml.load(data)"),
    ("CWE-502", "import yaml", "with open(path) as f:\n    config = yaml.load(f, Loader=yaml.Loader)"),
    ("CWE-502", "import marshal", "code = marshal.loads(data)"),
    ("CWE-502", "import shelve", "db = shelve.open(path)"),
    ("CWE-502", "import dill", "fn = dill.loads(data)"),
    ("CWE-327", "import hashlib", "digest = hashlib.md5(user.encode()).hexdigest()"),
    ("CWE-327", "import hashlib", "digest = hashlib.sha1(data).hexdigest()"),
    ("CWE-327", "import hashlib", "h = hashlib.new('md5', data)"),
    ("CWE-327", "import ssl", "ctx = ssl.SSLContext(ssl.PROTOCOL_TLSv1)"),
    ("CWE-327", "from Crypto.Cipher import DES", "cipher = DES.new(b'8bytekey', DES.MODE_ECB)"),
    ("CWE-327", "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes",
     "cipher = Cipher(algorithms.AES(data), modes.ECB())"),
    ("CWE-330", "import random, string",
     "token = ''.join(random.choice(string.ascii_letters) for _ in range(32))"),
    ("CWE-330", "import random", "otp = random.randint(100000, 999999)"),
    ("CWE-259", "", "password = 'SuperSecret123'\nlogin(user, password)"),
    ("CWE-259", "import psycopg2", "conn = psycopg2.connect(host=host, user='app', password='hunter2')"),
    ("CWE-259", "", "if data == 'admin123':\n    grant(user)\nsecret_key = 'kq83hf93hd83'"),
    ("CWE-89", "import sqlite3", "cur = sqlite3.connect(path).cursor()\n"
                                 "cur.execute(\"SELECT * FROM users WHERE name = '%s'\" % user)"),
    ("CWE-89", "import sqlite3", "cur = sqlite3.connect(path).cursor()\n"
                                 "cur.execute(f'DELETE FROM orders WHERE id = {data}')"),
    ("CWE-89", "import sqlite3", "cur = sqlite3.connect(path).cursor()\n"
                                 "query = 'SELECT * FROM accounts WHERE id = ' + user\ncur.execute(query)"),
    ("CWE-89", "import sqlite3", "cur = sqlite3.connect(path).cursor()\n"
                                 "cur.execute(\"UPDATE users SET email = '{}' WHERE id = {}\".format(data, user))"),
    ("CWE-295", "import requests", "resp = requests.get(url, verify=False, timeout=10)"),
    ("CWE-295", "import ssl, urllib.request",
     "ctx = ssl._create_unverified_context()\nbody = urllib.request.urlopen(url, context=ctx).read()"),
    ("CWE-295", "import paramiko", "client = paramiko.SSHClient()\n"
                                   "client.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n"
                                   "client.connect(host)"),
    ("CWE-94", "from flask import Flask", "app = Flask(__name__)\napp.run(debug=True)"),
    ("CWE-319", "import telnetlib", "tn = telnetlib.Telnet(host)\ntn.write(data)"),
    ("CWE-319", "import ftplib", "ftp = ftplib.FTP(host)\nftp.login(user, data)"),
    ("CWE-611", "import xml.etree.ElementTree as ET", "root = ET.fromstring(data)"),
    ("CWE-611", "from xml.dom import minidom", "doc = minidom.parseString(data)"),
    ("CWE-611", "from lxml import etree", "tree = etree.fromstring(data)"),
    ("CWE-732", "import os", "os.chmod(path, 0o777)"),
    ("CWE-732", "import os", "os.chmod(path, 0o666)"),
    ("CWE-605", "import socket", "srv = socket.socket()\nsrv.bind(('0.0.0.0', 8080))"),
    ("CWE-79", "import jinja2", "env = jinja2.Environment(loader=jinja2.FileSystemLoader('templates'))"),
    ("CWE-79", "from django.utils.safestring import mark_safe", "html = mark_safe(data)"),
    ("CWE-377", "import tempfile", "name = tempfile.mktemp()\nwith open(name, 'w') as f:\n    f.write(data)"),
    ("CWE-377", "", "with open('/tmp/report.csv', 'w') as f:\n    f.write(data)"),
    ("CWE-22", "import tarfile", "with tarfile.open(path) as tar:\n    tar.extractall(dest)"),
    ("CWE-326", "from cryptography.hazmat.primitives.asymmetric import rsa",
     "key = rsa.generate_private_key(public_exponent=65537, key_size=1024)"),
    ("CWE-400", "import requests", "resp = requests.get(url)"),
    # weaknesses bandit has plugins for and herd's rule list does not name (written to keep the table honest)
    ("CWE-918", "import urllib.request", "body = urllib.request.urlopen(url).read()"),
    ("CWE-89", "from django.db.models.expressions import RawSQL",
     "qs = Entry.objects.annotate(v=RawSQL('SELECT col FROM t WHERE id = %s' % user, []))"),
    ("CWE-79", "from mako.template import Template", "html = Template(data).render()"),
    ("CWE-94", "import logging.config", "listener = logging.config.listen(9999)\nlistener.start()"),
    ("CWE-494", "from transformers import AutoModel", "model = AutoModel.from_pretrained(path)"),
]

SECURE: list[tuple[str, str]] = [
    ("import subprocess", "out = subprocess.run(['ping', '-c', '1', host], capture_output=True, timeout=10)"),
    ("import subprocess", "proc = subprocess.run(['ls', '-l', path], shell=False, check=True)"),
    ("import shlex, subprocess", "args = shlex.split(cmd)\nsubprocess.run(args, check=True)"),
    ("import shutil", "shutil.make_archive('/backups/site', 'gztar', path)"),
    ("import ast", "result = ast.literal_eval(expr)"),
    ("import json", "obj = json.loads(data)"),
    ("import yaml", "config = yaml.safe_load(data)"),
    ("import yaml", "with open(path) as f:\n    config = yaml.load(f, Loader=yaml.SafeLoader)"),
    ("import pickle", "blob = pickle.dumps({'user': user})"),
    ("import hashlib", "digest = hashlib.sha256(user.encode()).hexdigest()"),
    ("import hashlib", "etag = hashlib.md5(data, usedforsecurity=False).hexdigest()"),
    ("import hashlib, os", "salt = os.urandom(16)\nkey = hashlib.pbkdf2_hmac('sha256', data, salt, 600_000)"),
    ("import ssl", "ctx = ssl.create_default_context()\nctx.minimum_version = ssl.TLSVersion.TLSv1_2"),
    ("import os\nfrom cryptography.hazmat.primitives.ciphers.aead import AESGCM",
     "nonce = os.urandom(12)\nct = AESGCM(AESGCM.generate_key(bit_length=256)).encrypt(nonce, data, None)"),
    ("import secrets", "token = secrets.token_urlsafe(32)"),
    ("import secrets", "otp = secrets.randbelow(900000) + 100000"),
    ("import random", "deck = list(range(52))\nrandom.shuffle(deck)\nhand = deck[:5]"),
    ("import os", "password = os.environ['DB_PASSWORD']\nlogin(user, password)"),
    ("import getpass", "password = getpass.getpass('Password: ')\nlogin(user, password)"),
    ("import sqlite3", "cur = sqlite3.connect(path).cursor()\n"
                       "cur.execute('SELECT * FROM users WHERE name = ?', (user,))"),
    ("import sqlite3", "cur = sqlite3.connect(path).cursor()\ncur.execute('DELETE FROM orders WHERE id = ?', (data,))"),
    ("import sqlite3", "cur = sqlite3.connect(path).cursor()\n"
                       "query = 'SELECT id, name FROM accounts WHERE active = 1'\ncur.execute(query)"),
    ("import requests", "resp = requests.get(url, timeout=10)"),
    ("import requests", "resp = requests.post(url, json={'q': data}, timeout=(3, 30))"),
    ("import ssl, urllib.request",
     "ctx = ssl.create_default_context()\nbody = urllib.request.urlopen('https://example.com', context=ctx).read()"),
    ("import paramiko", "client = paramiko.SSHClient()\nclient.load_system_host_keys()\n"
                        "client.set_missing_host_key_policy(paramiko.RejectPolicy())\nclient.connect(host)"),
    ("from flask import Flask", "app = Flask(__name__)\napp.run(host='127.0.0.1', port=5000)"),
    ("import ftplib", "ftp = ftplib.FTP_TLS(host)\nftp.login(user, data)\nftp.prot_p()"),
    ("import defusedxml.ElementTree as ET", "root = ET.fromstring(data)"),
    ("import xml.etree.ElementTree as ET", "root = ET.Element('report')\nET.SubElement(root, 'user').text = user"),
    ("import os", "os.chmod(path, 0o600)"),
    ("import os", "os.chmod(path, 0o755)"),
    ("import socket", "srv = socket.socket()\nsrv.bind(('127.0.0.1', 8080))"),
    ("import jinja2", "env = jinja2.Environment(loader=jinja2.FileSystemLoader('templates'), "
                      "autoescape=jinja2.select_autoescape())"),
    ("from markupsafe import escape", "html = escape(data)"),
    ("import tempfile", "with tempfile.NamedTemporaryFile('w', delete=False) as f:\n    f.write(data)"),
    ("import tempfile, os", "fd, name = tempfile.mkstemp()\nos.write(fd, data)"),
    ("import tarfile", "with tarfile.open(path) as tar:\n    tar.extractall(dest, filter='data')"),
    ("from cryptography.hazmat.primitives.asymmetric import rsa",
     "key = rsa.generate_private_key(public_exponent=65537, key_size=3072)"),
    ("import zipfile", "with zipfile.ZipFile(path) as z:\n    z.extractall(dest)"),
    ("", "model.eval()\nscores = model(data)"),
]

# the peer's CWE for the same weakness (bandit files yaml.load/XXE as CWE-20, jinja2 autoescape as CWE-94,
# mako as CWE-80, eval/exec as CWE-78, urlopen as CWE-22): counted as a match, so the CWE column
# measures detection, not naming
EQUIVALENT = {"CWE-95": {"CWE-78"}, "CWE-918": {"CWE-22"}, "CWE-611": {"CWE-20"}, "CWE-502": {"CWE-20"},
              "CWE-79": {"CWE-94", "CWE-80"},
              "CWE-259": {"CWE-798"},
              "CWE-330": {"CWE-338"}, "CWE-327": {"CWE-328", "CWE-326"}, "CWE-326": {"CWE-327"}}


def render(imports: str, body: str, index: int) -> str:
    """A module around one core: a handler function (even index) or a service-class method (odd)."""
    head = (imports + "\n\n\n") if imports else ""
    if index % 2 == 0:
        return (f"{head}def handle(user, data, path, cmd, host, url, expr, dest):\n"
                f"    \"\"\"Request handler.\"\"\"\n{textwrap.indent(body, '    ')}\n    return 'ok'\n")
    return (f"{head}class Service:\n    \"\"\"Background job.\"\"\"\n\n"
            f"    def run(self, user, data, path, cmd, host, url, expr, dest):\n"
            f"{textwrap.indent(body, '        ')}\n        return None\n")


def samples() -> list[tuple[str, str | None, str]]:
    """(file name, CWE label or None for secure, source) for every sample."""
    out: list[tuple[str, str | None, str]] = []
    for i, (cwe, imports, body) in enumerate(INSECURE):
        out.append((f"insecure_{i:03d}.py", cwe, render(imports, body, i)))
    for i, (imports, body) in enumerate(SECURE):
        out.append((f"secure_{i:03d}.py", None, render(imports, body, i)))
    return out


def run_bandit(bandit: str, folder: Path) -> tuple[dict[str, list[dict]], float]:
    """bandit -f json over the folder: issues per file name, and wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([bandit, "-q", "-r", "-f", "json", str(folder)], capture_output=True, text=True,
                          timeout=600)
    wall = time.perf_counter() - t0
    report = json.loads(proc.stdout)
    if report.get("errors"):
        raise SystemExit(f"bandit reported errors: {report['errors'][:3]}")
    issues: dict[str, list[dict]] = {}
    for issue in report["results"]:
        issues.setdefault(Path(issue["filename"]).name, []).append(issue)
    return issues, wall


def agreement(bandit: str, folder: Path) -> None:
    """On an unlabelled folder (e.g. bandit's own examples/, never committed here): the share of bandit's
    medium+ findings that herd also reports on a line of the same statement, per bandit test id."""
    proc = subprocess.run([bandit, "-q", "-r", "-f", "json", str(folder)], capture_output=True, text=True,
                          timeout=600)
    results = json.loads(proc.stdout)["results"]
    herd_lines: dict[str, set[int]] = {}
    for path in folder.rglob("*.py"):
        src = path.read_text(encoding="utf-8", errors="replace")
        herd_lines[str(path.resolve())] = {f.line for f in scan(src) if f.severity != "low"} | \
            {-f.line for f in scan(src) if f.severity == "low"}
    per_test: dict[str, list[int]] = {}
    for issue in results:
        if issue["issue_severity"] == "LOW":
            continue
        lines = herd_lines.get(str(Path(issue["filename"]).resolve()), set())
        span = set(issue.get("line_range") or [issue["line_number"]])
        hit = bool(span & {abs(x) for x in lines})
        per_test.setdefault(f"{issue['test_id']} {issue['test_name']}", [0, 0])[hit] += 1
    total = sum(sum(v) for v in per_test.values())
    matched = sum(v[1] for v in per_test.values())
    print(f"\nagreement on {folder} ({len(herd_lines)} files): herd reports {matched}/{total} = "
          f"{matched / max(total, 1):.3f} of bandit's medium+ findings (same statement, any herd severity)")
    for test, (miss, hit) in sorted(per_test.items()):
        print(f"  {test}: {hit}/{hit + miss}")
    herd_total = sum(len(v) for v in herd_lines.values())
    print(f"  herd findings there: {herd_total} (unlabelled: not scored as right or wrong)")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bandit", default=str(ROOT / "benchmarks/.bandit-env/bin/bandit"))
    parser.add_argument("--reps", type=int, default=30, help="timed scans per sample")
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--agreement-dir", type=Path, help="also: coverage of bandit's medium+ findings on this "
                        "unlabelled folder (e.g. a checkout of bandit's examples/)")
    args = parser.parse_args()
    print(f"host: {describe()}; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    version = subprocess.run([args.bandit, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    t0 = time.perf_counter()
    n_rules = len(builtin_rules())
    print(f"herd rules: {n_rules} (loaded in {(time.perf_counter() - t0) * 1e3:.1f} ms); peer: {version}")
    data = samples()
    n_bad = sum(label is not None for _, label, _ in data)
    print(f"samples: {n_bad} insecure, {len(data) - n_bad} secure")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, _, src in data:
            compile(src, name, "exec")  # every sample parses: bandit skips files that do not
            (folder / name).write_text(src)
        bandit_issues, bandit_wall = run_bandit(args.bandit, folder)

    rows = {"herd": {"any": 0, "cwe": 0, "fp": 0}, "bandit": {"any": 0, "cwe": 0, "fp": 0}}
    misses: dict[str, list[str]] = {"herd": [], "bandit": []}
    fps: dict[str, list[str]] = {"herd": [], "bandit": []}
    for name, label, src in data:
        herd_f = [(f.cwe_id, f.severity, f.pattern_id) for f in scan(src)]
        bandit_f = [(f"CWE-{i['issue_cwe']['id']}", i["issue_severity"].lower(), i["test_id"])
                    for i in bandit_issues.get(name, [])]
        for tool, found in (("herd", herd_f), ("bandit", bandit_f)):
            if label is None:
                serious = [f for f in found if f[1] in ("medium", "high", "critical")]
                if serious:
                    rows[tool]["fp"] += 1
                    fps[tool].append(f"{name}: {serious}")
                continue
            if found:
                rows[tool]["any"] += 1
            if any(c == label or c in EQUIVALENT.get(label, ()) for c, _, _ in found):
                rows[tool]["cwe"] += 1
            else:
                misses[tool].append(f"{name} ({label}): {found}")

    n_good = len(data) - n_bad
    print("\n| tool | recall, any severity | recall, labelled CWE | FP at medium+ (secure samples) |")
    print("|---|---:|---:|---:|")
    for tool in ("herd", "bandit"):
        r = rows[tool]
        print(f"| {tool} | {r['any']}/{n_bad} = {r['any'] / n_bad:.3f} | {r['cwe']}/{n_bad} = {r['cwe'] / n_bad:.3f} | "
              f"{r['fp']}/{n_good} = {r['fp'] / n_good:.3f} |")
    for tool in ("herd", "bandit"):
        print(f"\n{tool}: FP at medium+: {fps[tool] or 'none'}")
        if args.show_misses or len(misses[tool]) <= 12:
            print(f"{tool}: missed the labelled CWE on: " + ("\n  ".join([""] + misses[tool]) or "none"))

    # latency: every sample, reps times (after one warm-up scan each)
    times: list[float] = []
    for _, _, src in data:
        scan(src)
        for _ in range(args.reps):
            t = time.perf_counter()
            scan(src)
            times.append((time.perf_counter() - t) * 1e3)
    big: list[tuple[float, int]] = []
    for path in sorted((ROOT / "herd").rglob("*.py")):
        src = path.read_text(encoding="utf-8")
        scan(src)
        per_file = []
        for _ in range(3):  # median of 3: the box is shared, one timing can land on a busy moment
            t = time.perf_counter()
            scan(src)
            per_file.append((time.perf_counter() - t) * 1e3)
        big.append((statistics.median(per_file), src.count("\n")))
    big_ms = [b[0] for b in big]
    slowest = max(big)
    print(f"\nherd scan() per sample ({len(times)} scans): p50 {pct(times, 50):.3f} ms, "
          f"p95 {pct(times, 95):.3f} ms, max {max(times):.3f} ms")
    lines = statistics.median(b[1] for b in big)
    print(f"herd scan() per file of herd/ ({len(big)} files, median {lines:.0f} lines; median of 3 per file): "
          f"p50 {pct(big_ms, 50):.2f} ms, p95 {pct(big_ms, 95):.2f} ms, max {slowest[0]:.2f} ms "
          f"({slowest[1]} lines)")
    print(f"bandit, one process over all {len(data)} samples: {bandit_wall:.2f} s wall "
          f"({bandit_wall / len(data) * 1e3:.1f} ms/sample incl. start-up)")
    if args.agreement_dir:
        agreement(args.bandit, args.agreement_dir)


if __name__ == "__main__":
    main()
