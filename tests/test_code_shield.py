"""Code shield: every shipped rule flags its positive fixtures and none of its negative ones (the safe
spelling of the same thing), the rule loader rejects malformed rules by name and field, model answers
are scanned block by block, the policy decides as documented, and broken Python still gets findings."""

from __future__ import annotations

import re

import pytest

from herd.safety.code_shield import (Finding, Policy, RuleError, Treatment, builtin_rules, code_blocks, decide,
                                     load_rule_file, parse_rules, scan, scan_output)

# pattern_id -> (language, [positive fixtures], [negative fixtures])
FIXTURES: dict[str, tuple[str, list[str], list[str]]] = {
    "python.subprocess-shell-true": ("python", [
        "import subprocess\nsubprocess.run(cmd, shell=True)\n",
        "import subprocess as sp\nsp.Popen('ls ' + d, shell=1)\n",
        "from subprocess import check_output\nout = check_output(f'grep {q} x', shell=use_shell)\n",
    ], [
        "import subprocess\nsubprocess.run(['ls', '-l', d], check=True)\n",
        "import subprocess\nsubprocess.run(['ls'], shell=False)\n",
        "shell = True\nprint(shell)\n",
    ]),
    "python.shell-call-dynamic": ("python", [
        "import os\nos.system('rm -rf ' + path)\n",
        "import os\nos.popen(f'cat {name}').read()\n",
        "from os import system as run\nrun(cmd)\n",
    ], [
        "import os\nos.system('clear')\n",
        "import subprocess\nsubprocess.run(['rm', '-rf', path])\n",
    ]),
    "python.shell-call-literal": ("python", [
        "import os\nos.system('clear')\n",
    ], [
        "import os\nos.system(cmd)\n",
        "import subprocess\nsubprocess.run(['clear'])\n",
    ]),
    "python.eval-exec-dynamic": ("python", [
        "value = eval(user_input)\n",
        "exec(compile(src, 'f', 'exec'))\n",
        "eval(request.args['expr'])\n",
    ], [
        "import ast\nvalue = ast.literal_eval(user_input)\n",
        "x = eval('1 + 2')\n",
        "model.eval()\n",
    ]),
    "python.unsafe-deserialization": ("python", [
        "import pickle\nobj = pickle.loads(data)\n",
        "import marshal\ncode = marshal.load(f)\n",
        "from pickle import load\nload(open(p, 'rb'))\n",
        "import torch\nsd = torch.load(path)\n",
        "import shelve\ndb = shelve.open('x')\n",
        "import jsonpickle\nobj = jsonpickle.unpickler.decode(s)\n",
    ], [
        "import json\nobj = json.loads(data)\n",
        "import pickle\nblob = pickle.dumps(obj)\n",
        "import torch\nsd = torch.load(path, weights_only=True)\n",
    ]),
    "python.yaml-unsafe-load": ("python", [
        "import yaml\ncfg = yaml.load(f)\n",
        "import yaml\ncfg = yaml.load(f, Loader=yaml.Loader)\n",
        "import yaml\ncfg = yaml.unsafe_load(text)\n",
        "import yaml\ncfg = yaml.load(f, yaml.UnsafeLoader)\n",
    ], [
        "import yaml\ncfg = yaml.safe_load(f)\n",
        "import yaml\ncfg = yaml.load(f, Loader=yaml.SafeLoader)\n",
        "from yaml import load, CSafeLoader\ncfg = load(f, CSafeLoader)\n",
        "import json\ncfg = json.load(f)\n",
    ]),
    "python.weak-hash": ("python", [
        "import hashlib\nh = hashlib.md5(password.encode()).hexdigest()\n",
        "import hashlib\nh = hashlib.sha1(data)\n",
        "import hashlib\nh = hashlib.new('MD5', data)\n",
        "from cryptography.hazmat.primitives import hashes\nd = hashes.Hash(hashes.SHA1())\n",
    ], [
        "import hashlib\nh = hashlib.sha256(data).hexdigest()\n",
        "import hashlib\nh = hashlib.md5(data, usedforsecurity=False).hexdigest()\n",
        "import hashlib\nh = hashlib.new('sha256', data)\n",
    ]),
    "python.insecure-random-secret": ("python", [
        "import random\ntoken = ''.join(random.choice(chars) for _ in range(32))\n",
        "import random\ndef make_password():\n    return str(random.randint(0, 10**8))\n",
        "from random import getrandbits\nsession_id = getrandbits(128)\n",
    ], [
        "import secrets\ntoken = secrets.token_hex(16)\n",
        "import random\ncard = random.choice(deck)\n",
        "import random\nrandom.shuffle(items)\n",
    ]),
    "python.hardcoded-password": ("python", [
        "password = 'hunter2'\n",
        "DB_PASSWORD = \"s3cr3t!\"\n",
        "conn = connect(host='db', user='app', password='p4ss')\n",
        "config = {'api_key': 'AKIA1234567890'}\n",
        "if password == 'admin123':\n    login()\n",
        "def login(user, password='letmein'):\n    pass\n",
        "class C:\n    def __init__(self):\n        self.secret_key = 'abc123xyz'\n",
    ], [
        "import os\npassword = os.environ['DB_PASSWORD']\n",
        "import getpass\npassword = getpass.getpass()\n",
        "password = ''\n",
        "password_prompt = 'Enter your password: '\n",
        "token_url = 'https://example.com/token'\n",
        "SECRET = '<SECRET>'\npassword = '********'\napi_key = '${API_KEY}'\n",
    ]),
    "python.sql-string-format": ("python", [
        "cur.execute(f\"SELECT * FROM users WHERE name = '{name}'\")\n",
        "cur.execute('DELETE FROM t WHERE id = %s' % user_id)\n",
        "cur.execute('SELECT * FROM t WHERE id = {}'.format(i))\n",
        "q = \"SELECT * FROM users WHERE id = \" + uid\ncursor.execute(q)\n",
        "from sqlalchemy import text\nconn.execute(text(f'SELECT * FROM t WHERE a = {a}'))\n",
    ], [
        "cur.execute('SELECT * FROM users WHERE name = ?', (name,))\n",
        "cur.execute('SELECT * FROM users WHERE id = %s', (uid,))\n",
        "q = 'SELECT * FROM users'\ncur.execute(q)\n",
        "msg = f'SELECT is a keyword, {name}'\nprint(msg)\n",
    ]),
    "python.sql-string-built": ("python", [
        "query = \"SELECT * FROM foo WHERE id = '%s'\" % identifier\n",
        "q = f\"\"\"\n    DELETE FROM orders\n    WHERE id = {oid}\"\"\"\n",
        "sql = 'UPDATE users SET name = ' + name\n",
        "run_query('INSERT INTO t VALUES ({})'.format(v))\n",
    ], [
        "query = 'SELECT * FROM foo WHERE id = %s'\ncur.execute(query, (identifier,))\n",
        "msg = 'Please select a file from the list: %s' % name\n",
        "label = f'Selected {n} rows from {table}'\n",
        "cur.execute(f'SELECT * FROM t WHERE a = {a}')\n",  # reported once, by python.sql-string-format
    ]),
    "python.tls-verify-disabled": ("python", [
        "import requests\nr = requests.get(url, verify=False, timeout=5)\n",
        "import httpx\nclient = httpx.Client(verify=False)\n",
    ], [
        "import requests\nr = requests.get(url, timeout=5)\n",
        "import requests\nr = requests.get(url, verify='/etc/ssl/ca.pem', timeout=5)\n",
    ]),
    "python.ssl-no-cert-check": ("python", [
        "import ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n",
        "import ssl\nctx = ssl._create_unverified_context()\n",
    ], [
        "import ssl\nctx = ssl.create_default_context()\nctx.verify_mode = ssl.CERT_REQUIRED\n",
        "import ssl\n# never set ssl.CERT_NONE here\nctx = ssl.create_default_context()\n",
    ]),
    "python.ssl-weak-protocol": ("python", [
        "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLSv1)\n",
        "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_SSLv3)\n",
        "import ssl\nctx.minimum_version = ssl.TLSVersion.TLSv1_1\n",
        "from OpenSSL import SSL\nctx = SSL.Context(method=SSL.TLSv1_METHOD)\n",
    ], [
        "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n",
        "import ssl\nctx = ssl.SSLContext(ssl.PROTOCOL_TLSv1_2)\n",
        "import ssl\nctx.minimum_version = ssl.TLSVersion.TLSv1_2\n",
        "from OpenSSL import SSL\nctx = SSL.Context(SSL.TLS_CLIENT_METHOD)\n",
    ]),
    "python.flask-debug": ("python", [
        "from flask import Flask\napp = Flask(__name__)\napp.run(debug=True)\n",
    ], [
        "from flask import Flask\napp = Flask(__name__)\napp.run(debug=False)\n",
        "import os\napp.run(debug=os.environ.get('DEBUG') == '1')\n",
    ]),
    "python.cleartext-protocol": ("python", [
        "import telnetlib\ntn = telnetlib.Telnet(host)\n",
        "from ftplib import FTP\nftp = FTP('ftp.example.com')\n",
    ], [
        "from ftplib import FTP_TLS\nftp = FTP_TLS('ftp.example.com')\n",
        "import paramiko\nclient = paramiko.SSHClient()\n",
    ]),
    "python.xml-untrusted-parse": ("python", [
        "import xml.etree.ElementTree as ET\nroot = ET.fromstring(data)\n",
        "from xml.dom import minidom\ndoc = minidom.parseString(body)\n",
        "from lxml import etree\ntree = etree.parse(f)\n",
    ], [
        "import defusedxml.ElementTree as ET\nroot = ET.fromstring(data)\n",
        "import xml.etree.ElementTree as ET\nroot = ET.Element('root')\n",
    ]),
    "python.chmod-world-writable": ("python", [
        "import os\nos.chmod(path, 0o777)\n",
        "import os, stat\nos.chmod(path, stat.S_IRWXU | stat.S_IWOTH)\n",
        "from pathlib import Path\nPath(p).chmod(0o666)\n",
    ], [
        "import os\nos.chmod(path, 0o600)\n",
        "import os\nos.chmod(path, 0o755)\n",
        "import os, stat\nos.chmod(path, stat.S_IRUSR | stat.S_IWUSR)\n",
    ]),
    "python.bind-all-interfaces": ("python", [
        "app.run(host='0.0.0.0', port=80)\n",
        "sock.bind((\"0.0.0.0\", 8080))\n",
    ], [
        "app.run(host='127.0.0.1', port=8000)\n",
        "# do not bind '0.0.0.0' in production\nsock.bind(('localhost', 8080))\n",
    ]),
    "python.jinja2-autoescape-off": ("python", [
        "import jinja2\nenv = jinja2.Environment(loader=loader)\n",
        "from jinja2 import Environment\nenv = Environment(autoescape=False)\n",
    ], [
        "from jinja2 import Environment, select_autoescape\nenv = Environment(autoescape=select_autoescape())\n",
        "import jinja2\nenv = jinja2.Environment(autoescape=True)\n",
    ]),
    "python.mark-safe-dynamic": ("python", [
        "from django.utils.safestring import mark_safe\nhtml = mark_safe(user_bio)\n",
        "from markupsafe import Markup\nm = Markup(comment)\n",
    ], [
        "from django.utils.safestring import mark_safe\nhtml = mark_safe('<b>fixed</b>')\n",
        "from markupsafe import escape\nm = escape(comment)\n",
    ]),
    "python.tempfile-mktemp": ("python", [
        "import tempfile\nname = tempfile.mktemp()\n",
        "from tempfile import mktemp\nf = open(mktemp(), 'w')\n",
    ], [
        "import tempfile\nfd, name = tempfile.mkstemp()\n",
        "import tempfile\nwith tempfile.NamedTemporaryFile() as f:\n    pass\n",
    ]),
    "python.hardcoded-tmp-path": ("python", [
        "open('/tmp/app.log', 'w')\n",
        "CACHE = \"/var/tmp/cache.db\"\n",
    ], [
        "import tempfile\nd = tempfile.mkdtemp()\n",
        "path = '/tmpfs-notes.txt'\n",
    ]),
    "python.tarfile-extractall": ("python", [
        "import tarfile\nwith tarfile.open(p) as t:\n    t.extractall(dest)\n",
    ], [
        "import tarfile\nwith tarfile.open(p) as t:\n    t.extractall(dest, filter='data')\n",
        "import zipfile\nwith zipfile.ZipFile(p) as z:\n    z.extractall(dest)\n",
    ]),
    "python.ssh-auto-add-host-key": ("python", [
        "import paramiko\nc = paramiko.SSHClient()\nc.set_missing_host_key_policy(paramiko.AutoAddPolicy())\n",
    ], [
        "import paramiko\nc = paramiko.SSHClient()\nc.set_missing_host_key_policy(paramiko.RejectPolicy())\n",
    ]),
    "python.weak-cipher": ("python", [
        "from Crypto.Cipher import DES\nc = DES.new(key, DES.MODE_CBC)\n",
        "from Crypto.Cipher import AES\nc = AES.new(key, AES.MODE_ECB)\n",
        "from cryptography.hazmat.primitives.ciphers import algorithms\na = algorithms.ARC4(key)\n",
        "from Cryptodome.Cipher import ARC2 as rc2\nc = rc2.new(key, rc2.MODE_CFB, iv)\n",
    ], [
        "from Crypto.Cipher import AES\nc = AES.new(key, AES.MODE_GCM)\n",
        "from cryptography.hazmat.primitives.ciphers import algorithms, modes\n"
        "c = Cipher(algorithms.AES(k), modes.GCM(iv))\n",
    ]),
    "python.weak-key-size": ("python", [
        "from cryptography.hazmat.primitives.asymmetric import rsa\n"
        "k = rsa.generate_private_key(public_exponent=65537, key_size=1024)\n",
        "from Crypto.PublicKey import RSA\nk = RSA.generate(1024)\n",
        "from Crypto.PublicKey import DSA as dsa\nk = dsa.generate(bits=1024)\n",
        "from cryptography.hazmat.primitives.asymmetric import ec\nk = ec.generate_private_key(ec.SECT163R2())\n",
    ], [
        "from cryptography.hazmat.primitives.asymmetric import rsa\n"
        "k = rsa.generate_private_key(public_exponent=65537, key_size=4096)\n",
        "from Crypto.PublicKey import RSA\nk = RSA.generate(2048)\n",
        "from cryptography.hazmat.primitives.asymmetric import ec\nk = ec.generate_private_key(ec.SECP384R1())\n",
    ]),
    "python.requests-no-timeout": ("python", [
        "import requests\nr = requests.get(url)\n",
        "from requests import post\npost(url, json=body)\n",
        "import httpx\nr = httpx.get(url, timeout=None)\n",
    ], [
        "import requests\nr = requests.get(url, timeout=10)\n",
        "r = session.get(url)\n",
        "import httpx\nr = httpx.get(url)\n",
    ]),
    "python.urlopen-any-scheme": ("python", [
        "import urllib.request\nbody = urllib.request.urlopen(url).read()\n",
        "from urllib.request import urlopen\nurlopen('file:///etc/passwd')\n",
    ], [
        "import urllib.request\nbody = urllib.request.urlopen('https://example.com/feed').read()\n",
        "import requests\nbody = requests.get(url, timeout=5).text\n",
    ]),
    "python.mako-no-escape": ("python", [
        "from mako.template import Template\nhtml = Template(text).render(name=name)\n",
        "from mako.lookup import TemplateLookup\nlookup = TemplateLookup(directories=['t'])\n",
    ], [
        "from mako.template import Template\nhtml = Template(text, default_filters=['h']).render(name=name)\n",
    ]),
    "python.logging-config-listen": ("python", [
        "import logging.config\nt = logging.config.listen(9999)\n",
    ], [
        "import logging.config\nt = logging.config.listen(9999, verify=check_signature)\n",
        "import socket\ns = socket.socket()\ns.listen(5)\n",
    ]),
    "python.hub-download-unpinned": ("python", [
        "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/model')\n",
        "from huggingface_hub import hf_hub_download\np = hf_hub_download('org/model', 'w.bin', revision='main')\n",
    ], [
        "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/model', revision='3f2a9c1')\n",
        "m = load_model(path)\n",
    ]),
    "c.gets": ("c", [
        "#include <stdio.h>\nint main(void) { char b[16]; gets(b); }\n",
    ], [
        "#include <stdio.h>\nint main(void) { char b[16]; fgets(b, sizeof b, stdin); }\n",
    ]),
    "c.unbounded-string-copy": ("c", [
        "void f(char *s) { char b[8]; strcpy(b, s); }\n",
        "void f(char *s) { char b[8]; sprintf(b, \"%s\", s); }\n",
    ], [
        "void f(char *s) { char b[8]; snprintf(b, sizeof b, \"%s\", s); }\n",
        "void f(char *s) { char b[8]; strncpy(b, s, sizeof b - 1); }\n",
    ]),
    "c.scanf-unbounded-string": ("c", [
        "char name[32];\nscanf(\"%s\", name);\n",
    ], [
        "char name[32];\nscanf(\"%31s\", name);\n",
        "int n;\nscanf(\"%d\", &n);\n",
    ]),
    "c.format-string": ("c", [
        "void log_msg(char *msg) { printf(msg); }\n",
        "void f(FILE *fp, char *m) { fprintf(fp, m); }\n",
    ], [
        "void log_msg(char *msg) { printf(\"%s\", msg); }\n",
        "void f(FILE *fp, char *m) { fprintf(fp, \"%s\\n\", m); }\n",
    ]),
    "c.command-execution": ("c", [
        "void f(char *cmd) { system(cmd); }\n",
        "FILE *p = popen(buf, \"r\");\n",
    ], [
        "int main(void) { execlp(\"ls\", \"ls\", \"-l\", NULL); }\n",
        "int main(void) { system(\"clear\"); }\n",
    ]),
    "c.insecure-temp-file": ("c", [
        "char *name = tmpnam(NULL);\n",
    ], [
        "char tpl[] = \"/tmp/xXXXXXX\";\nint fd = mkstemp(tpl);\n",
    ]),
    "c.weak-random": ("c", [
        "int token = rand();\n",
    ], [
        "unsigned char buf[16];\ngetrandom(buf, sizeof buf, 0);\n",
    ]),
    "c.weak-hash": ("c", [
        "MD5(data, len, digest);\n",
        "EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);\n",
    ], [
        "EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);\n",
    ]),
    "javascript.eval-dynamic": ("javascript", [
        "const result = eval(req.query.expr);\n",
        "const f = new Function('a', body);\n",
        "setTimeout('doThing()', 100);\n",
    ], [
        "const result = JSON.parse(req.body);\n",
        "setTimeout(() => doThing(), 100);\n",
    ]),
    "javascript.dom-xss": ("javascript", [
        "el.innerHTML = userComment;\n",
        "document.write(location.hash);\n",
    ], [
        "el.textContent = userComment;\n",
        "el.innerHTML = '';\n",
    ]),
    "javascript.child-process-exec": ("javascript", [
        "const { exec } = require('child_process');\nexec(`ls ${dir}`, cb);\n",
        "child_process.execSync('git log ' + branch);\n",
    ], [
        "const { execFile } = require('child_process');\nexecFile('ls', [dir], cb);\n",
        "const m = /a+/.exec(text);\n",
    ]),
    "javascript.tls-reject-unauthorized-off": ("javascript", [
        "const agent = new https.Agent({ rejectUnauthorized: false });\n",
        "process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';\n",
    ], [
        "const agent = new https.Agent({ rejectUnauthorized: true });\n",
    ]),
    "javascript.weak-hash": ("javascript", [
        "const h = crypto.createHash('md5').update(pw).digest('hex');\n",
    ], [
        "const h = crypto.createHash('sha256').update(pw).digest('hex');\n",
    ]),
    "javascript.insecure-random-secret": ("javascript", [
        "const token = Math.random().toString(36).slice(2);\n",
    ], [
        "const token = crypto.randomBytes(32).toString('hex');\n",
        "const jitter = Math.random() * 100;\n",
    ]),
    "javascript.hardcoded-secret": ("javascript", [
        "const API_KEY = 'sk_live_1234567890';\n",
        "const cfg = { password: 'hunter22' };\n",
    ], [
        "const API_KEY = process.env.API_KEY;\n",
        "const cfg = { password: '' };\n",
    ]),
}


def _ids(code: str, language: str) -> set[str]:
    return {f.pattern_id for f in scan(code, language)}


def test_every_shipped_rule_has_fixtures() -> None:
    """A rule without a positive and a negative fixture is untested: fail so none is added silently."""
    shipped = {r.pattern_id for r in builtin_rules()}
    assert shipped == set(FIXTURES), f"no fixtures: {shipped - set(FIXTURES)}; stale: {set(FIXTURES) - shipped}"
    assert all(pos and neg for _, pos, neg in FIXTURES.values())
    assert sum(r.language == "python" for r in builtin_rules()) >= 20
    assert all(r.cwe_id.startswith("CWE-") for r in builtin_rules())


@pytest.mark.parametrize("pattern_id,language,code",
                         [(pid, lang, c) for pid, (lang, pos, _) in FIXTURES.items() for c in pos])
def test_rule_flags_positive_fixture(pattern_id: str, language: str, code: str) -> None:
    findings = [f for f in scan(code, language) if f.pattern_id == pattern_id]
    assert findings, f"{pattern_id} missed:\n{code}"
    assert all(not f.fallback for f in findings) or language != "python"
    assert findings[0].snippet and 1 <= findings[0].line <= code.count("\n") + 1


@pytest.mark.parametrize("pattern_id,language,code",
                         [(pid, lang, c) for pid, (lang, _, neg) in FIXTURES.items() for c in neg])
def test_rule_ignores_negative_fixture(pattern_id: str, language: str, code: str) -> None:
    assert pattern_id not in _ids(code, language), f"{pattern_id} flagged the safe spelling:\n{code}"


def test_finding_fields_and_line() -> None:
    code = "import subprocess\n\n\nsubprocess.call(x, shell=True)\n"
    (f,) = scan(code)
    assert (f.pattern_id, f.cwe_id, f.severity, f.line, f.snippet) == (
        "python.subprocess-shell-true", "CWE-78", "high", 4, "subprocess.call(x, shell=True)")
    assert "shell" in f.description and f.to_dict()["cwe_id"] == "CWE-78"


def test_clean_code_and_unknown_language() -> None:
    assert scan("def add(a, b):\n    return a + b\n") == []
    assert scan("rm -rf /", "bash") == []


def test_syntax_error_falls_back_to_regex_rules() -> None:
    broken = ("import subprocess, yaml\n"
              "def f(:\n"
              "    subprocess.run(cmd, shell=True)\n"
              "    cfg = yaml.load(stream)\n"
              "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLSv1)\n")
    findings = {f.pattern_id: f for f in scan(broken)}
    assert findings["python.ssl-weak-protocol"].fallback is False  # a regex rule: exact either way
    assert findings["python.subprocess-shell-true"].fallback is True
    assert findings["python.subprocess-shell-true"].line == 3
    assert findings["python.yaml-unsafe-load"].fallback is True
    assert "python.yaml-unsafe-load" not in _ids("def f(:\n    yaml.load(s, Loader=yaml.SafeLoader)\n", "python")


# AST rules with a `fallback` regex: a hit in code that does not parse (the trailing `def f(:`)
FALLBACK_FIXTURES: dict[str, tuple[str, str]] = {
    "python.subprocess-shell-true": ("subprocess.run(cmd, shell=True)", "subprocess.run(cmd, shell=False)"),
    "python.shell-call-dynamic": ("os.system('ls ' + d)", "os.system('ls')"),
    "python.eval-exec-dynamic": ("eval(expr)", "eval('1 + 2')"),
    "python.unsafe-deserialization": ("obj = pickle.loads(blob)", "blob = pickle.dumps(obj)"),
    "python.yaml-unsafe-load": ("yaml.load(s)", "yaml.load(s, Loader=yaml.SafeLoader)"),
    "python.weak-hash": ("hashlib.md5(pw)", "hashlib.md5(blob, usedforsecurity=False)"),
    "python.hardcoded-password": ("password = 'hunter2'", "password = os.environ['PW']"),
    "python.sql-string-format": ("cur.execute(f'SELECT * FROM t WHERE a = {a}')",
                                 "cur.execute('SELECT * FROM t WHERE a = ?', (a,))"),
    "python.tls-verify-disabled": ("requests.get(u, verify=False)", "requests.get(u, timeout=3)"),
    "python.sql-string-built": ("q = f'SELECT * FROM t WHERE a = {a}'", "q = 'SELECT * FROM t WHERE a = ?'"),
    "python.weak-cipher": ("c = DES.new(key, DES.MODE_CBC)", "c = AES.new(key, AES.MODE_GCM)"),
    "python.flask-debug": ("app.run(debug=True)", "app.run(debug=False)"),
    "python.cleartext-protocol": ("tn = telnetlib.Telnet(host)", "ftp = ftplib.FTP_TLS(host)"),
    "python.xml-untrusted-parse": ("root = ET.fromstring(body)", "root = ET.Element('r')"),
    "python.chmod-world-writable": ("os.chmod(p, 0o777)", "os.chmod(p, 0o755)"),
    "python.jinja2-autoescape-off": ("env = Environment(autoescape=False)", "env = Environment(autoescape=True)"),
}


def test_every_fallback_has_a_fixture() -> None:
    assert {r.pattern_id for r in builtin_rules() if r.fallback is not None} == set(FALLBACK_FIXTURES)


@pytest.mark.parametrize("pattern_id", sorted(FALLBACK_FIXTURES))
def test_fallback_regex_on_unparsable_python(pattern_id: str) -> None:
    bad, good = FALLBACK_FIXTURES[pattern_id]
    flagged = [f for f in scan(f"x = 1\n{bad}\ndef f(:\n") if f.pattern_id == pattern_id]
    assert [(f.line, f.fallback) for f in flagged] == [(2, True)]
    assert pattern_id not in _ids(f"x = 1\n{good}\ndef f(:\n", "python")


def test_comment_lines_are_not_findings() -> None:
    assert scan("# ctx.verify_mode = ssl.CERT_NONE is dangerous\nx = 1\n") == []


# ---- rule loading -----------------------------------------------------------------------------------

GOOD = """
rules:
  - pattern_id: python.no-foo
    cwe_id: CWE-20
    description: foo() is bad
    severity: medium
    language: python
    prescan: 'foo'
    regex: '\\bfoo\\s*\\('
"""


def test_custom_rules_load_and_scan(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    rules = load_rule_file(path)
    assert [r.pattern_id for r in rules] == ["python.no-foo"]
    assert [f.line for f in scan("x = 1\nfoo()\n", rules=rules)] == [2]
    assert scan("x = 1\n", rules=rules) == []


@pytest.mark.parametrize("change,message", [
    (("severity: medium", "severity: severe"), "rule 'python.no-foo': field 'severity' must be one of"),
    (("cwe_id: CWE-20", "cwe_id: 20"), "rule 'python.no-foo': field 'cwe_id' must look like 'CWE-78'"),
    (("    prescan: 'foo'\n", ""), "rule 'python.no-foo': missing field 'prescan'"),
    (("regex: '\\bfoo\\s*\\('", "regex: '(unclosed'"), "rule 'python.no-foo': field 'regex' is not a valid regex"),
    (("regex: '\\bfoo\\s*\\('", "ast: no_such_matcher"), "rule 'python.no-foo': field 'ast' names no matcher"),
    (("    regex: '\\bfoo\\s*\\('\n", ""), "rule 'python.no-foo': exactly one of field 'regex' or field 'ast'"),
    (("severity: medium", "severty: medium"), "rule 'python.no-foo': unknown field 'severty'"),
    (("language: python", "language: cobol"), "rule 'python.no-foo': field 'language' must be one of"),
    (("pattern_id: python.no-foo", "cwe_id: CWE-1"), "rule #1:"),
])
def test_malformed_rule_is_rejected_by_name_and_field(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(RuleError, match="^mine.yaml: " + re.escape(message)):
        parse_rules(GOOD.replace(old, new), "mine.yaml")


def test_duplicate_and_shapeless_rule_files_are_rejected() -> None:
    body = GOOD.split("rules:\n", 1)[1]
    with pytest.raises(RuleError, match="'python.no-foo': duplicate pattern_id"):
        parse_rules("rules:\n" + body + body)
    with pytest.raises(RuleError, match="a 'rules:' list"):
        parse_rules("- just a list\n")
    with pytest.raises(RuleError, match="not valid YAML"):
        parse_rules("rules: [\n")


def test_ast_rules_are_python_only() -> None:
    c_ast = GOOD.replace("python.no-foo", "c.no-foo").replace("language: python", "language: c") \
        .replace("regex: '\\bfoo\\s*\\('", "ast: eval_exec_dynamic")
    with pytest.raises(RuleError, match="field 'ast' is for language python only"):
        parse_rules(c_ast)


# ---- model outputs ----------------------------------------------------------------------------------

ANSWER = """Here is a script:

```python
import subprocess
subprocess.run(cmd, shell=True)
```

And the C version:

```cpp
int main(void) { char b[8]; gets(b); }
```

```bash
curl http://x | sh
```

Untagged:

```
import yaml
cfg = yaml.load(open('c.yml'))
```
"""


def test_scan_output_scans_each_fenced_block_in_its_language() -> None:
    blocks = code_blocks(ANSWER)
    assert [(b.tag, b.language) for b in blocks] == [("python", "python"), ("cpp", "c"), ("bash", None),
                                                      ("", "python")]
    got = [(f.pattern_id, f.line) for f in scan_output(ANSWER)]
    assert got == [("python.subprocess-shell-true", 5), ("c.gets", 11), ("python.yaml-unsafe-load", 22)]
    lines = ANSWER.splitlines()
    assert all(f.snippet == lines[f.line - 1].strip() for f in scan_output(ANSWER))


def test_scan_output_unterminated_fence_and_untagged_languages() -> None:
    streaming = "Sure:\n```python\nimport os\nos.system(user_cmd)\n"
    assert [(f.pattern_id, f.line) for f in scan_output(streaming)] == [("python.shell-call-dynamic", 4)]
    assert [b.language for b in code_blocks("```\n#include <stdio.h>\nint main(){gets(b);}\n```\n")] == ["c"]
    assert [b.language for b in code_blocks("```\nconst x = eval(input);\n```\n")] == ["javascript"]
    assert scan_output("No code here, just prose about os.system(cmd).") == []


# ---- policy -----------------------------------------------------------------------------------------

def _finding(severity: str, pid: str = "python.x") -> Finding:
    return Finding(pid, "CWE-1", severity, 1, "x", "d")


def test_default_policy_blocks_high_warns_medium_ignores_low() -> None:
    low, med, high, crit = (_finding(s) for s in ("low", "medium", "high", "critical"))
    assert decide([]).action is Treatment.IGNORE
    assert decide([low]) == decide([]) and decide([low]).findings == ()
    assert decide([low, med]).action is Treatment.WARN and decide([low, med]).findings == (med,)
    d = decide([med, high, low, crit])
    assert d.action is Treatment.BLOCK and d.blocked and d.findings == (high, crit)


def test_policy_modes_and_overrides() -> None:
    high = _finding("high", "python.bind-all-interfaces")
    assert decide([high], Policy.from_mode("warn")).action is Treatment.WARN
    assert decide([high], Policy.from_mode("off")).action is Treatment.IGNORE
    assert decide([high], Policy.from_mode("block")).action is Treatment.BLOCK
    allow = Policy(overrides={"python.bind-all-interfaces": Treatment.IGNORE})
    assert decide([high], allow).action is Treatment.IGNORE
    with pytest.raises(ValueError, match="block, warn or off"):
        Policy.from_mode("strict")
    with pytest.raises(ValueError, match="no treatment for severity 'critical'"):
        Policy({"low": Treatment.IGNORE, "medium": Treatment.WARN, "high": Treatment.BLOCK})


def test_real_answer_end_to_end() -> None:
    findings = scan_output(ANSWER)
    decision = decide(findings)
    assert decision.blocked
    assert {f.cwe_id for f in decision.findings} == {"CWE-78", "CWE-242", "CWE-502"}


def test_package_usage_example_runs() -> None:
    """The usage example in herd/safety/code_shield/__init__.py (also the README's) stays true."""
    import doctest

    import herd.safety.code_shield as code_shield

    result = doctest.testmod(code_shield)
    assert result.attempted >= 3 and result.failed == 0
