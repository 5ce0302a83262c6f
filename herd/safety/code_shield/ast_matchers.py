"""Python-AST matchers: the precise half of the rules where a regex is too coarse.

A regex cannot tell `subprocess.run(cmd, shell=True)` from `shell=False`, `yaml.load(f)` from
`yaml.load(f, Loader=yaml.SafeLoader)`, or `eval(user)` from `eval("1+2")`; these matchers look at the
call, its resolved name and its arguments. Each takes a PyContext and yields the nodes to report (the
scanner turns them into findings with the rule's CWE id and severity). A rule names its matcher in
YAML (`ast: <name>`), so the registry below is the vocabulary the rule files may use."""

from __future__ import annotations

import ast
import re
import stat
from collections.abc import Callable, Iterator

from herd.safety.code_shield.pyast import PyContext, arg, is_const, is_str, keyword, target_names

Matcher = Callable[[PyContext], Iterator[ast.AST]]
MATCHERS: dict[str, Matcher] = {}


def matcher(fn: Matcher) -> Matcher:
    """Register a matcher under its function name (the name rule files use)."""
    MATCHERS[fn.__name__] = fn
    return fn


def _calls(ctx: PyContext, names: set[str] | frozenset[str]) -> Iterator[ast.Call]:
    for call in ctx.calls:
        if ctx.call_name(call) in names:
            yield call


_SUBPROCESS = frozenset({"subprocess.run", "subprocess.call", "subprocess.check_call",
                         "subprocess.check_output", "subprocess.Popen"})
_SHELL_FUNCS = frozenset({"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
                          "commands.getoutput", "commands.getstatusoutput", "asyncio.create_subprocess_shell",
                          "popen2.popen2", "os.popen2", "os.popen3", "os.popen4"})


@matcher
def subprocess_shell_true(ctx: PyContext) -> Iterator[ast.AST]:
    """subprocess.* with shell= anything but a false constant: the command goes through /bin/sh."""
    for call in _calls(ctx, _SUBPROCESS):
        shell = keyword(call, "shell")
        if shell is not None and not is_const(shell, False, None, 0):
            yield call


@matcher
def shell_call_dynamic(ctx: PyContext) -> Iterator[ast.AST]:
    """os.system/os.popen-style calls on a command built at run time (injection if it holds input)."""
    for call in _calls(ctx, _SHELL_FUNCS):
        cmd = arg(call, 0, "cmd")
        if cmd is not None and not is_str(cmd):
            yield call


@matcher
def shell_call_literal(ctx: PyContext) -> Iterator[ast.AST]:
    """os.system/os.popen-style calls on a fixed string: not injectable, but a shell all the same."""
    for call in _calls(ctx, _SHELL_FUNCS):
        if is_str(arg(call, 0, "cmd")):
            yield call


@matcher
def eval_exec_dynamic(ctx: PyContext) -> Iterator[ast.AST]:
    """eval/exec of anything but a string literal: code injection when the string holds input."""
    for call in _calls(ctx, {"eval", "exec", "builtins.eval", "builtins.exec"}):
        code = arg(call, 0)
        if code is not None and not is_str(code):
            yield call


_DESERIALIZE = frozenset({
    "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads", "_pickle.load",
    "_pickle.loads", "dill.load", "dill.loads", "shelve.open", "marshal.load", "marshal.loads",
    "jsonpickle.decode", "jsonpickle.unpickler.decode", "jsonpickle.unpickler.Unpickler", "dill.Unpickler",
    "pandas.read_pickle", "cloudpickle.load", "cloudpickle.loads"})


@matcher
def unsafe_deserialization(ctx: PyContext) -> Iterator[ast.AST]:
    """pickle/marshal/shelve-style loads run code chosen by whoever wrote the bytes; torch.load too
    unless weights_only=True."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in _DESERIALIZE:
            yield call
        elif name == "torch.load" and not is_const(keyword(call, "weights_only"), True):
            yield call


_SAFE_LOADERS = ("SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader")


@matcher
def yaml_unsafe_load(ctx: PyContext) -> Iterator[ast.AST]:
    """yaml.load without a safe Loader (or yaml.unsafe_load) constructs arbitrary Python objects."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("yaml.unsafe_load", "yaml.unsafe_load_all"):
            yield call
        elif name in ("yaml.load", "yaml.load_all"):
            loader = arg(call, 1, "Loader")
            loader_name = ctx.qualname(loader) if loader is not None else ""
            if not loader_name.endswith(_SAFE_LOADERS):
                yield call


_WEAK_HASHES = frozenset({"md2", "md4", "md5", "sha", "sha1"})


@matcher
def weak_hash(ctx: PyContext) -> Iterator[ast.AST]:
    """MD5/SHA-1 (broken for collision resistance) unless marked usedforsecurity=False."""
    for call in ctx.calls:
        if is_const(keyword(call, "usedforsecurity"), False):
            continue
        name = ctx.call_name(call)
        short = name.rsplit(".", 1)[-1]
        if name.startswith("hashlib.") and short.lower() in _WEAK_HASHES:
            yield call
        elif name == "hashlib.new" and is_str(first := arg(call, 0, "name")) \
                and first.value.lower().replace("-", "") in _WEAK_HASHES:  # type: ignore[union-attr]
            yield call
        elif re.search(r"(?:^|\.)(?:hashes\.(?:MD5|SHA1)|Hash\.(?:MD5|MD4|MD2|SHA|SHA1)\.new)$", name):
            yield call


_RANDOM_FUNCS = frozenset({"random", "randint", "randrange", "choice", "choices", "getrandbits", "sample",
                           "uniform", "randbytes", "shuffle"})
_SECRET_CONTEXT = re.compile(r"(?i)token|secret|passw|pwd|nonce|salt|otp|csrf|session|auth|api_?key|"
                             r"reset_?code|verif|credential|private_?key")


@matcher
def insecure_random_secret(ctx: PyContext) -> Iterator[ast.AST]:
    """`random` (a Mersenne Twister: predictable) used where the value is a secret, judged by the name
    it is stored in or the function that makes it; `random` for games and sampling is fine."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        mod, _, fn = name.rpartition(".")
        if mod not in ("random", "numpy.random", "random.Random()") or fn not in _RANDOM_FUNCS:
            continue
        names: list[str] = []
        stmt = ctx.enclosing(call, (ast.stmt,))
        if isinstance(stmt, ast.Assign):
            names += [n for t in stmt.targets for n in target_names(t)]
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            names += target_names(stmt.target)
        func = ctx.enclosing(call, (ast.FunctionDef, ast.AsyncFunctionDef))
        if func is not None:
            names.append(func.name)  # type: ignore[attr-defined]
        kw_parent = ctx.parents.get(call)
        if isinstance(kw_parent, ast.keyword) and kw_parent.arg:
            names.append(kw_parent.arg)
        if any(_SECRET_CONTEXT.search(n) for n in names):
            yield call


_SECRET_NAME = re.compile(r"(?i)^(?:.*_)?(?:pass(?:word|wd|phrase)?|pwd|secret(?:_?key)?|token|api_?key|"
                          r"access_?key|private_?key|auth_?token|client_?secret|credentials?)$")


_PLACEHOLDER = re.compile(r"^(?:<[^<>]*>|\*+|x+|X+|\{\{.*\}\}|\$\{.*\}|\$[A-Z_]+|%\(\w+\)s)$")


def _literal_secret(node: ast.AST | None) -> bool:
    """A non-empty literal that is not a placeholder ('<SECRET>', '***', '${TOKEN}', '{{ password }}')."""
    if not is_str(node):
        return False
    value = node.value.strip()  # type: ignore[union-attr]
    return bool(value) and not _PLACEHOLDER.match(value)


@matcher
def hardcoded_password(ctx: PyContext) -> Iterator[ast.AST]:
    """A non-empty string literal stored in, passed as, compared with or defaulted to a name that holds
    a credential (password, secret, token, api_key, ...): it ships with the code."""
    for node in ctx.assigns:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if _literal_secret(node.value) and any(_SECRET_NAME.match(n) for t in targets for n in target_names(t)):
            yield node
    for call in ctx.calls:
        for kw in call.keywords:
            if kw.arg and _SECRET_NAME.match(kw.arg) and _literal_secret(kw.value):
                yield call
                break
    for node in ctx.nodes:
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if is_str(k) and _SECRET_NAME.match(k.value) and _literal_secret(v):  # type: ignore[union-attr]
                    yield node
                    break
        elif isinstance(node, ast.Compare) and len(node.comparators) == 1:
            sides = [node.left, node.comparators[0]]
            names = [n for s in sides for n in target_names(s)]
            if any(_SECRET_NAME.match(n) for n in names) and any(_literal_secret(s) for s in sides):
                yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
            pairs += [(p, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            if any(_SECRET_NAME.match(p.arg) and _literal_secret(d) for p, d in pairs):
                yield node


_SQL = re.compile(r"(?i)\b(?:select\s.+\sfrom|insert\s+into|update\s.+\sset|delete\s+from|where\s|"
                  r"drop\s+table|create\s+table|order\s+by)")
_SQL_TEXT = ("sqlalchemy.text", "sqlalchemy.sql.text", "sqlalchemy.sql.expression.text")
_EXECUTE = frozenset({"execute", "executemany", "executescript", "raw", "read_sql", "read_sql_query", "mogrify"})


def _dynamic_string(node: ast.AST) -> bool:
    """A string built at run time from values: f-string with fields, `"..." % x`, `"...".format(x)`,
    or concatenation with a literal."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mod) and (is_str(node.left) or _dynamic_string(node.left)):
            return True
        if isinstance(node.op, ast.Add):
            sides = (node.left, node.right)
            return any(is_str(s) or _dynamic_string(s) for s in sides) and not all(is_str(s) for s in sides)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return is_str(node.func.value)
    return False


_SQL_START = re.compile(r"(?is)^\s*(?:select\s.+\sfrom|insert\s+into|update\s+\w+\s+set|delete\s+from|"
                        r"with\s+\w+\s+as\s*\(|drop\s+table|truncate\s)")


def _leading_text(node: ast.AST) -> str:
    """The literal text a dynamic string starts with (up to its first formatted value)."""
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if not is_str(part):
                break
            text += part.value  # type: ignore[attr-defined]
        return text
    if isinstance(node, ast.BinOp):
        return _leading_text(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return _leading_text(node.func.value)
    return node.value if is_str(node) else ""  # type: ignore[attr-defined]


@matcher
def sql_string_built(ctx: PyContext) -> Iterator[ast.AST]:
    """A string that starts as a SQL statement and splices values in by formatting: even when the
    execute() call is elsewhere (another function, an ORM's raw()), it is an injection in waiting.
    Strings passed straight to .execute() are left to sql_string_format (one finding per mistake)."""
    for node in ctx.nodes:
        parent = ctx.parents.get(node)
        if isinstance(parent, (ast.BinOp, ast.JoinedStr)) or (
                isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute)
                and parent.func.attr in _EXECUTE and node in parent.args):
            continue
        if isinstance(node, (ast.JoinedStr, ast.BinOp, ast.Call)) and _dynamic_string(node) \
                and _SQL_START.search(_leading_text(node)):
            yield node


_WEAK_CIPHER_MODULES = ("Crypto.Cipher", "Cryptodome.Cipher")
_WEAK_CIPHERS = frozenset({"DES", "DES3", "ARC2", "ARC4", "Blowfish", "XOR", "CAST"})
_WEAK_ALGORITHMS = frozenset({"ARC4", "Blowfish", "IDEA", "TripleDES", "CAST5", "SEED"})


@matcher
def weak_cipher(ctx: PyContext) -> Iterator[ast.AST]:
    """Broken ciphers (DES, 3DES, RC2, RC4, Blowfish, XOR, IDEA, CAST) however they were imported,
    and ECB mode (equal blocks encrypt equally)."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        parts = name.split(".")
        if len(parts) >= 2 and parts[-1] == "new" and parts[-2] in _WEAK_CIPHERS \
                and name.startswith(_WEAK_CIPHER_MODULES):
            yield call
        elif len(parts) >= 2 and parts[-2] == "algorithms" and parts[-1] in _WEAK_ALGORITHMS:
            yield call
        elif len(parts) >= 2 and parts[-2] == "modes" and parts[-1] == "ECB":
            yield call
    for node in ctx.nodes:
        if isinstance(node, ast.Attribute) and node.attr == "MODE_ECB":
            yield node


def _text_of(node: ast.AST) -> str:
    return " ".join(n.value for n in ast.walk(node) if is_str(n))  # type: ignore[attr-defined]


@matcher
def sql_string_format(ctx: PyContext) -> Iterator[ast.AST]:
    """SQL built by string formatting reaching .execute() (directly or through a variable) or
    sqlalchemy text(): SQL injection; parameters (`?`, `%s` with a tuple) are the safe spelling."""
    built: dict[str, ast.AST] = {}
    for node in ctx.assigns:
        if node.value is not None and _dynamic_string(node.value) and _SQL.search(_text_of(node.value)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for n in (n for t in targets for n in target_names(t)):
                built[n] = node.value
    for call in ctx.calls:
        func = call.func
        query = arg(call, 0, "sql")
        if query is None:
            continue
        is_exec = isinstance(func, ast.Attribute) and func.attr in _EXECUTE
        is_text = ctx.call_name(call).endswith(_SQL_TEXT)
        if not (is_exec or is_text):
            continue
        if _dynamic_string(query) and (is_exec or _SQL.search(_text_of(query))):
            yield call
        elif isinstance(query, ast.Name) and query.id in built:
            yield call


@matcher
def tls_verify_disabled(ctx: PyContext) -> Iterator[ast.AST]:
    """verify=False on requests/httpx/aiohttp-style calls: certificates are not checked (MITM)."""
    for call in ctx.calls:
        for name in ("verify", "verify_ssl", "ssl"):
            if is_const(keyword(call, name), False):
                yield call
                break


@matcher
def flask_debug(ctx: PyContext) -> Iterator[ast.AST]:
    """app.run(debug=True): the Werkzeug debugger executes Python typed into the error page."""
    for call in ctx.calls:
        if isinstance(call.func, ast.Attribute) and call.func.attr == "run" \
                and is_const(keyword(call, "debug"), True):
            yield call


@matcher
def cleartext_protocol(ctx: PyContext) -> Iterator[ast.AST]:
    """telnetlib.Telnet / ftplib.FTP send credentials and data unencrypted (FTP_TLS is the safe one)."""
    yield from _calls(ctx, {"telnetlib.Telnet", "ftplib.FTP"})


_XML_MODULES = ("xml.etree.ElementTree", "xml.etree.cElementTree", "xml.dom.minidom", "xml.dom.pulldom",
                "xml.sax", "xml.dom.expatbuilder", "lxml.etree")
_XML_FUNCS = frozenset({"parse", "fromstring", "XML", "iterparse", "parseString", "make_parser",
                        "XMLParser", "fromstringlist", "XMLID"})


@matcher
def xml_untrusted_parse(ctx: PyContext) -> Iterator[ast.AST]:
    """Standard-library / lxml XML parsers expand entities (XXE, billion laughs); defusedxml does not."""
    for call in ctx.calls:
        mod, _, fn = ctx.call_name(call).rpartition(".")
        if mod in _XML_MODULES and fn in _XML_FUNCS:
            if fn == "XMLParser" and is_const(keyword(call, "resolve_entities"), False):
                continue
            yield call


def _int_value(node: ast.AST | None) -> int | None:
    """Evaluate an int literal or an |/+ of literals and stat.S_* names (how modes are written)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "stat":
        value = getattr(stat, node.attr, None)
        return value if isinstance(value, int) else None
    if isinstance(node, ast.Name) and node.id.startswith("S_"):
        value = getattr(stat, node.id, None)
        return value if isinstance(value, int) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitOr, ast.Add)):
        left, right = _int_value(node.left), _int_value(node.right)
        return None if left is None or right is None else left | right
    return None


@matcher
def chmod_world_writable(ctx: PyContext) -> Iterator[ast.AST]:
    """chmod to a mode that lets every user write the file (0o777, 0o666, S_IWOTH)."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name in ("os.chmod", "os.fchmod", "os.lchmod"):
            mode = arg(call, 1, "mode")
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "chmod":
            mode = arg(call, 0, "mode")
        else:
            continue
        value = _int_value(mode)
        if value is not None and value & stat.S_IWOTH:
            yield call


@matcher
def jinja2_autoescape_off(ctx: PyContext) -> Iterator[ast.AST]:
    """jinja2.Environment without autoescape (its default is off) or with autoescape=False: XSS."""
    for call in _calls(ctx, {"jinja2.Environment", "jinja2.environment.Environment"}):
        value = keyword(call, "autoescape")
        if value is None or is_const(value, False):
            yield call


@matcher
def tarfile_extractall(ctx: PyContext) -> Iterator[ast.AST]:
    """TarFile.extractall without filter=/members=: member names like ../../etc/x escape the target."""
    if not ctx.imports("tarfile"):
        return
    for call in ctx.calls:
        if isinstance(call.func, ast.Attribute) and call.func.attr == "extractall" \
                and keyword(call, "filter") is None and keyword(call, "members") is None and len(call.args) < 2:
            yield call


_REQUESTS = frozenset(f"{lib}.{m}" for lib in ("requests", "httpx")
                     for m in ("get", "post", "put", "delete", "patch", "head", "options", "request"))


@matcher
def requests_no_timeout(ctx: PyContext) -> Iterator[ast.AST]:
    """requests.* without timeout= (or timeout=None) waits forever on a stalled server. httpx has a
    default timeout, so only its explicit timeout=None is reported."""
    for call in _calls(ctx, _REQUESTS):
        timeout = keyword(call, "timeout")
        if is_const(timeout, None) or (timeout is None and ctx.call_name(call).startswith("requests.")):
            yield call


@matcher
def mark_safe_dynamic(ctx: PyContext) -> Iterator[ast.AST]:
    """mark_safe / Markup on a non-literal turns off HTML escaping for data that may be user input."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name.endswith(("mark_safe", "markupsafe.Markup", "flask.Markup", "jinja2.Markup")) or name == "Markup":
            value = arg(call, 0)
            if value is not None and not is_str(value):
                yield call


_URLOPEN = frozenset({"urllib.request.urlopen", "urllib.urlopen", "urllib2.urlopen", "urllib.request.Request",
                      "urllib.request.URLopener", "urllib.request.FancyURLopener", "urllib.request.urlretrieve",
                      "urllib.urlretrieve", "six.moves.urllib.request.urlopen"})


@matcher
def urlopen_any_scheme(ctx: PyContext) -> Iterator[ast.AST]:
    """urllib's openers follow file:// and other schemes: a URL from the user reads local files or
    reaches internal hosts. A literal http(s) URL is fine."""
    for call in _calls(ctx, _URLOPEN):
        url = arg(call, 0, "url")
        literal_web = is_str(url) and url.value.startswith(("https://", "http://"))  # type: ignore[union-attr]
        if url is not None and not literal_web:
            yield call


@matcher
def mako_no_escape(ctx: PyContext) -> Iterator[ast.AST]:
    """Mako templates do not HTML-escape by default; without default_filters=['h'] user data is markup."""
    for call in _calls(ctx, {"mako.template.Template", "mako.lookup.TemplateLookup"}):
        if keyword(call, "default_filters") is None:
            yield call


@matcher
def logging_config_listen(ctx: PyContext) -> Iterator[ast.AST]:
    """logging.config.listen() accepts a logging configuration from the network, and configurations can
    name classes to instantiate (code execution) unless a verify= callable checks them."""
    for call in _calls(ctx, {"logging.config.listen"}):
        if keyword(call, "verify") is None:
            yield call


_HUB_LOADS = ("from_pretrained", "hf_hub_download", "snapshot_download", "load_dataset")


@matcher
def hub_download_unpinned(ctx: PyContext) -> Iterator[ast.AST]:
    """Hugging Face Hub downloads without a pinned revision= run whatever the repository holds today
    (a changed model file or loading script)."""
    for call in ctx.calls:
        name = ctx.call_name(call)
        if name.rsplit(".", 1)[-1] in _HUB_LOADS and (name.startswith(("transformers", "huggingface_hub",
                                                                      "datasets", "diffusers"))
                                                     or "from_pretrained" in name):
            revision = keyword(call, "revision")
            if revision is None or is_const(revision, "main", None):
                yield call
