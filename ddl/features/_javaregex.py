"""Java regular expressions (the syntax Spark's RegexTokenizer takes) compiled for the `regex`
package, with Java's meaning: ASCII \\w \\d \\s and POSIX classes unless (?U), Java's
Unicode-aware \\b, \\h, \\v, \\p{javaLowerCase}-style names, class intersection `&&`, \\Q..\\E,
Java's '.', and Java's split. What has no faithful translation raises ValueError naming it,
rather than compiling to something that means something else.
"""
import regex

# Java's POSIX classes: (ASCII meaning, meaning under UNICODE_CHARACTER_CLASS (?U))
_POSIX = {
    "Lower": ("a-z", r"\p{Lowercase}"),
    "Upper": ("A-Z", r"\p{Uppercase}"),
    "ASCII": (r"\x00-\x7F", r"\x00-\x7F"),
    "Alpha": ("a-zA-Z", r"\p{Alphabetic}"),
    "Digit": ("0-9", r"\p{Nd}"),
    "Alnum": ("a-zA-Z0-9", r"\p{Alphabetic}\p{Nd}"),
    "Punct": (r"!-/:-@\[-`{-~", r"\p{P}"),
    "Graph": (r"!-~", r"^\p{White_Space}\p{Cc}\p{Cs}\p{Cn}"),
    "Print": (r" -~", r"^\p{White_Space}\p{Cc}\p{Cs}\p{Cn}\t-\r\x85\u2028\u2029"),
    "Blank": (r" \t", r"\p{Zs}\t"),
    "Cntrl": (r"\x00-\x1F\x7F", r"\p{Cc}"),
    "XDigit": ("0-9a-fA-F", r"\p{Nd}\p{Hex_Digit}"),
    "Space": (r" \t\n\x0B\f\r", r"\p{White_Space}"),
}
# java.lang.Character properties
_JAVA = {
    "javaLowerCase": r"\p{Lowercase}", "javaUpperCase": r"\p{Uppercase}",
    "javaWhitespace": r"\t-\r\x1C-\x1F\p{Zs}\p{Zl}\p{Zp}--\xA0\u2007\u202F",
    "javaMirrored": r"\p{Bidi_Mirrored}", "javaLetter": r"\p{L}", "javaDigit": r"\p{Nd}",
    "javaLetterOrDigit": r"\p{L}\p{Nd}", "javaAlphabetic": r"\p{Alphabetic}",
}
# Is<binary property> under Java's names
_IS = {"Alphabetic": "Alphabetic", "Ideographic": "Ideographic", "Letter": "L",
       "Lowercase": "Lowercase", "Uppercase": "Uppercase", "Titlecase": "Lt",
       "Punctuation": "P", "Control": "Cc", "White_Space": "White_Space",
       "WhiteSpace": "White_Space", "Digit": "Nd", "Hex_Digit": "Hex_Digit",
       "HexDigit": "Hex_Digit", "Join_Control": "Join_Control", "JoinControl": "Join_Control",
       "Noncharacter_Code_Point": "Noncharacter_Code_Point", "Assigned": "Assigned"}
_H = r" \t\xA0\u1680\u180E\u2000-\u200A\u202F\u205F\u3000"
_V = r"\n\x0B\f\r\x85\u2028\u2029"
_ASCII_CLASS = {"w": "a-zA-Z0-9_", "d": "0-9", "s": r" \t\n\x0B\f\r"}
_WORD_B = r"\p{L}\p{Nd}_"  # Java's \b: Character.isLetterOrDigit or '_'
_LINE_END = r"\n\r\x85\u2028\u2029"


def _unsupported(what, pattern):
    raise ValueError(f"RegexTokenizer: Java regex feature {what} in {pattern!r} has no "
                     "faithful translation in ddl; rewrite the pattern without it")


def _prop(name, uni, neg, pattern):
    """A \\p{name} as set contents (for inside [...]), and whether it is negated."""
    if name in _POSIX:
        return _POSIX[name][1 if uni else 0], neg
    if name in _JAVA:
        return _JAVA[name], neg
    if name.startswith("Is") and name[2:] in _IS:
        return rf"\p{{{_IS[name[2:]]}}}", neg
    for pre in ("Is", "In", "sc=", "script=", "blk=", "block=", "gc=", "general_category="):
        if name.startswith(pre):
            body = name[len(pre):]
            kind = "Block" if pre in ("In", "blk=", "block=") else (
                "General_Category" if pre.startswith("g") else None)
            inner = f"{kind}={body}" if kind else body
            try:
                regex.compile(rf"\p{{{inner}}}")
            except regex.error:
                _unsupported(rf"\p{{{name}}}", pattern)
            return rf"\p{{{inner}}}", neg
    try:
        regex.compile(rf"\p{{{name}}}")
    except regex.error:
        _unsupported(rf"\p{{{name}}}", pattern)
    return rf"\p{{{name}}}", neg


def _leading_flags(p):
    """Java inline flags at the very start, e.g. (?U) or (?iU): (flags, rest)."""
    m = regex.match(r"\(\?([idmsuxU]+)\)", p)
    return (m.group(1), p[m.end():]) if m else ("", p)


def translate(pattern):
    """(regex pattern, regex flags) with the Java pattern's meaning."""
    if not isinstance(pattern, str):
        raise TypeError(f"RegexTokenizer: pattern must be a str, got {type(pattern).__name__}")
    lead, p = _leading_flags(pattern)
    uni = "U" in lead
    if "d" in lead:
        _unsupported("the flag (?d) (UNIX_LINES)", pattern)
    dotall = "s" in lead
    flags = regex.V1
    keep = "".join(c for c in lead if c in "imsx")
    out = [f"(?{keep})"] if keep else []
    i, n, depth = 0, len(p), 0  # depth: nesting of [...]
    while i < n:
        c = p[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"RegexTokenizer: pattern {pattern!r} ends with a lone '\\'")
            e = p[i + 1]
            if e == "Q":  # \Q...\E: a literal run
                j = p.find("\\E", i + 2)
                lit = p[i + 2:] if j < 0 else p[i + 2:j]
                out.append("".join("\\" + ch if not ch.isalnum() else ch for ch in lit))
                i = n if j < 0 else j + 2
                continue
            if e in "pP":
                if i + 2 < n and p[i + 2] == "{":
                    j = p.find("}", i + 3)
                    if j < 0:
                        raise ValueError(f"RegexTokenizer: unclosed \\{e}{{ in {pattern!r}")
                    name, end = p[i + 3:j], j + 1
                else:
                    name, end = p[i + 2:i + 3], i + 3
                body, neg = _prop(name, uni, e == "P", pattern)
                if body.startswith("^"):  # a class defined by what it excludes
                    body, neg = body[1:], not neg
                if depth:
                    if neg:
                        out.append("[^" + body + "]")
                    else:
                        out.append(body)
                else:
                    out.append(("[^" if neg else "[") + body + "]")
                i = end
                continue
            if e in "wWdDsS" and not uni:  # Java's ASCII classes (regex's are Unicode)
                body = _ASCII_CLASS[e.lower()]
                neg = e.isupper()
                out.append(("[^%s]" if neg else "[%s]") % body if not depth or neg else body)
                i += 2
                continue
            if e in "hHvV":
                body = _H if e in "hH" else _V
                neg = e.isupper()
                out.append(("[^%s]" if neg else "[%s]") % body if not depth or neg else body)
                i += 2
                continue
            if e in "bB" and not depth:
                w = _WORD_B if not uni else r"\w"
                if e == "b":
                    out.append(f"(?:(?<=[{w}])(?![{w}])|(?<![{w}])(?=[{w}]))")
                else:
                    out.append(f"(?:(?<=[{w}])(?=[{w}])|(?<![{w}])(?![{w}]))")
                i += 2
                continue
            if e == "R" and not depth:
                out.append(r"(?:\r\n|[\n\x0B\f\r\x85\u2028\u2029])")
                i += 2
                continue
            if e == "e":
                out.append(r"\x1B")
                i += 2
                continue
            if e in "c0":
                _unsupported("\\" + e, pattern)
            out.append(p[i:i + 2])
            i += 2
            continue
        if c == "[":
            depth += 1
            out.append(c)
            i += 1
            if i < n and p[i] == "^":
                out.append("^")
                i += 1
            if i < n and p[i] == "]":  # a leading ']' is a literal in Java too
                out.append("\\]")
                i += 1
            continue
        if c == "]" and depth:
            depth -= 1
        elif depth and c == "-" and i + 1 < n and p[i + 1] == "-":
            out.append("\\-")  # '--' is a set difference in the regex package, a '-' in Java
            i += 1
            continue
        elif depth and c in "|~" and i + 1 < n and p[i + 1] == c:
            out.append("\\" + c)
            i += 1
            continue
        elif not depth and c == "." and not dotall:
            out.append(f"[^{_LINE_END}]")
            i += 1
            continue
        elif not depth and c == "(" and p.startswith("(?", i):
            m = regex.match(r"\(\?([a-zA-Z-]*)([:)])", p[i:])
            if m and ("U" in m.group(1) or "u" in m.group(1) or "d" in m.group(1)):
                _unsupported(f"the inline flag group {m.group(0)!r} (only a leading (?U) is "
                             "supported)", pattern)
            if m and "s" in m.group(1) and not m.group(1).startswith("-"):
                _unsupported(f"the inline flag group {m.group(0)!r} after the start", pattern)
        out.append(c)
        i += 1
    return "".join(out), flags


def compile_java(pattern):
    """A compiled `regex` pattern with the Java pattern's meaning (ValueError when it has no
    faithful translation or does not compile)."""
    src, flags = translate(pattern)
    try:
        return regex.compile(src, flags)
    except regex.error as e:
        raise ValueError(f"RegexTokenizer: bad pattern {pattern!r}: {e}") from None


def java_split(rx, s):
    """Java's Pattern.split(s) (limit 0): no leading empty string from a zero-width match at 0,
    trailing empty strings dropped, [s] when nothing matched."""
    parts, pos, any_match = [], 0, False
    for m in rx.finditer(s):
        any_match = True
        if m.end() == 0:  # a zero-width match at the start: no leading ""
            continue
        parts.append(s[pos:m.start()])
        pos = m.end()
    if not any_match:
        return [s]
    parts.append(s[pos:])
    while parts and parts[-1] == "":
        parts.pop()
    return parts
