"""
Config files, then --key=value overrides, over a script's defaults:

    python train.py config/train_demo_cpu.py --batch_size=32 --learning_rate=6e-4

A config file is plain Python run with the current values in scope (so it can
compute from them); every name it assigns must be a known key. Override values
are parsed with ast.literal_eval (else taken as a string). Types are checked
against the defaults: an int is accepted for a float, an integral float
(1e4) for an int, true/false for a bool; a None default accepts anything.
Every mistake is one UserError line that names the key and the fix.
"""
import ast
import difflib
import io
import os
import tokenize
import types

from errors import UserError


def _suggest(key, known):
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"{c!r}" for c in close) + "?"
    return "see --help for the list of keys"


def _type_name(value):
    return type(value).__name__


def check_value(key, value, default, source):
    """The value converted to the default's type, or a UserError naming key, expected and given type."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    else:
        if type(value) is type(default):
            return value
    raise UserError(f"{key} expects {_type_name(default)} (default {default!r}) but {source} gives "
                    f"{_type_name(value)} {value!r}; e.g. --{key}={default!r}")


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # a bare word such as --dataset=shakespeare_char


def _is_config_value(name, value):
    return not name.startswith("_") and not callable(value) and not isinstance(value, types.ModuleType)


def apply_config_file(path, config, builtins=None, strict=True):
    """Run one config file over config (in place). builtins: the file's __builtins__ (diagnose
    passes one that refuses `import torch`); strict=False keeps unknown names instead of refusing
    them (a config of another nanoGPT fork)."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found; give a path such as config/train_demo_cpu.py")
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} cannot be read as Python text ({type(e).__name__}); "
                        f"fix that file or give another config file")
    scope = dict(config)
    if builtins is not None:
        scope["__builtins__"] = builtins
    try:
        exec(compile(source, path, "exec"), scope)
    except Exception as e:  # a broken config file: say where, in one line
        if builtins is not None and isinstance(e, ImportError):
            raise  # the caller's builtins refused an import: the caller says why
        raise UserError(f"config file {path} failed: {type(e).__name__}: {e}; fix that file")
    for name, value in scope.items():
        if name == "__builtins__" or not _is_config_value(name, value):
            continue
        if name not in config:
            if not strict:
                config[name] = value
                continue
            raise UserError(f"config file {path} sets unknown key {name!r}; {_suggest(name, list(config))}")
        if value is config[name] or value == config[name] and type(value) is type(config[name]):
            continue
        config[name] = check_value(name, value, config[name], path)


class Config(dict):
    """The resolved config: a dict (for config.json and the logs) whose keys read as attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def script_defaults(path):
    """{key: default} of a script's config block (its top-level `key = literal` lines, in order),
    read without running it: how diagnose knows train.py's keys without importing torch."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("_") or name.isupper():
                continue
            try:
                out[name] = ast.literal_eval(node.value)
            except (ValueError, SyntaxError):
                continue
    return out


def configure(defaults, argv, help_source=None, program="train.py"):
    """Resolved config: defaults, then each config file in argv, then each --key=value.

    defaults: {key: value}; argv: sys.argv[1:]; help_source: the file whose
    `key = value  # comment` lines document the keys for --help."""
    config = dict(defaults)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(defaults, help_source, program))
        raise SystemExit(0)
    for arg in argv:
        if not arg.startswith("--"):
            key = arg.split("=", 1)[0]
            if "=" in arg and not os.path.exists(arg) and key.isidentifier():
                hint = f"write it as --{arg}" if key in config else _suggest(key, list(config))
                raise UserError(f"{arg!r} is neither a config file nor an option; {hint}")
            apply_config_file(arg, config)
            continue
        if "=" not in arg:
            key = arg[2:]
            if key not in config:
                raise UserError(f"unknown option {arg}; {_suggest(key, list(config))}")
            raise UserError(f"{arg} needs a value; write it as {arg}=VALUE")
        key, text = arg[2:].split("=", 1)  # the value may itself contain '='
        if key not in config:
            raise UserError(f"unknown key {key!r} in {arg}; {_suggest(key, list(config))}")
        config[key] = check_value(key, _parse_value(text), defaults[key], f"--{key}")
    return config


def key_comments(path):
    """{key: trailing comment} for top-level `key = value  # comment` lines of a Python file,
    plus {key: section} from the last full-line comment above it."""
    comments, sections = {}, {}
    if not path or not os.path.exists(path):
        return comments, sections
    with open(path) as f:
        source = f.read()
    line_comment, full_line = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if tok.line.strip().startswith("#"):
                if text.strip("-= "):  # not a ruler line
                    full_line[tok.start[0]] = text
            else:
                line_comment[tok.start[0]] = text
    section = ""
    section_lines = sorted(full_line)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            above = [n for n in section_lines if n < node.lineno]
            if above:
                section = full_line[above[-1]]
            name = node.targets[0].id
            comments[name] = line_comment.get(node.lineno, "")
            sections[name] = section
    return comments, sections


def help_text(defaults, help_source, program):
    comments, sections = key_comments(help_source)
    lines = [f"usage: python {program} [config/FILE.py ...] [--key=value ...]", "",
             "Config files run first, in order, then --key=value overrides (Python literals, else strings).",
             "keys (default, meaning):"]
    width = max(len(k) for k in defaults) + 1
    last_section = None
    for key, value in defaults.items():
        section = sections.get(key)
        if section and section != last_section:
            lines.append(f"  # {section}")
            last_section = section
        lines.append(f"  --{key.ljust(width)} {value!r:<24} {comments.get(key, '')}".rstrip())
    return "\n".join(lines)
