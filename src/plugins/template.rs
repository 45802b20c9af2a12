//! Kong's `$(…)` value templates, in the two dialects Kong has.
//!
//! * ai-proxy (`kong/llm/drivers/shared.lua`, `merge_model_options`): the first `$(…)` of a value
//!   (Lua pattern `%$%((.-)%)`, i.e. up to the first `)`) is split on `.` into exactly
//!   `source.key`; `source` is `uri_captures` (named captures), `headers` or `query_params`. A
//!   missing value is an error (`<source> key <key> was not provided`), anything else that does not
//!   parse is `cannot parse expression for field '<value>'`. Later `$(…)` stay literal.
//! * request-transformer (`kong/plugins/request-transformer/access.lua`): the value is a Penlight
//!   template; every `$(…)` with balanced parentheses (Lua `%b()`) is a sandboxed Lua expression
//!   whose result replaces it, and `nil` renders as the empty string (Penlight compiles
//!   `$(e)` to `tostring(e or '')`), so a missing header/query arg/capture is **not** an error.
//!   We evaluate the subset of Lua that configs use in practice: `headers.x`,
//!   `headers["x-y"]`/`['x-y']`, `query_params.p`/`["p"]`, `uri_captures.name`/`["name"]`/`[1]`,
//!   string literals (so Kong's documented escape `$('$(literal)')` works), `a or b` defaults,
//!   `a .. b` concatenation (a nil operand fails, as Lua does) and parentheses. Anything else —
//!   `$(shared.k)`, function calls, other globals — is `BadExpression`; Kong would run it as Lua.
//!
//! Neither Kong dialect has a backslash escape (Penlight has none), so `\$(headers.x)` renders as
//! `\` followed by the header value, here as in Kong.
//!
//! Lookups read the client's original request, not the upstream request plugins are changing
//! (Kong's docs: templates see a snapshot taken before the transformation). Header names are
//! case-insensitive and `_` matches `-` (`kong.request.get_header` and the `__index` of
//! `ngx.req.get_headers()` both normalise that way); query args are case-sensitive. When a name
//! occurs several times the first value is used, as `kong.request.get_header` documents (Kong's
//! request-transformer would stringify the Lua table, `table: 0x…`, which no config relies on).
//! Beyond Kong's ai-proxy dialect we also accept the bracket forms and positional captures there,
//! so one config syntax works in both places.

use std::borrow::Cow;

use http::HeaderMap;

/// Route regex captures exposed to plugins as `uri_captures` (named and positional "1","2",…).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UriCaptures {
    /// Named groups in pattern order.
    pub named: Vec<(String, String)>,
    /// Every group by position; index 0 is capture "1" (the whole match is not exposed).
    pub positional: Vec<String>,
}

impl UriCaptures {
    /// The capture called `key`, else capture number `key` when it is a decimal `1`, `2`, ….
    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some((_, v)) = self.named.iter().find(|(n, _)| n == key) {
            return Some(v);
        }
        // Lua keeps `t[1]` and `t["01"]` apart, so only canonical numbers reach positions.
        if key.is_empty() || key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: usize = key.parse().ok()?;
        self.positional.get(n.checked_sub(1)?).map(String::as_str)
    }
}

/// Values a template may read, borrowed from the client's original request.
#[derive(Debug, Clone, Copy)]
pub struct TemplateSources<'a> {
    /// Request headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// Decoded query arguments in request order.
    pub query: &'a [(String, String)],
    /// Captures of the matched route's regex path.
    pub uri_captures: &'a UriCaptures,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TemplateError {
    /// ai-proxy: the referenced value is absent (request-transformer: a nil `..` operand).
    #[error("{source_name} key {key} was not provided")]
    Missing { source_name: String, key: String },
    /// The expression is not one we can evaluate; holds the whole configured value, as Kong.
    #[error("cannot parse expression for field '{0}'")]
    BadExpression(String),
}

/// ai-proxy semantics (§3.5 step 2): the first `$(source.key)` in `value` is replaced; sources uri_captures, headers, query_params.
pub fn render_ai<'v>(
    value: &'v str,
    src: &TemplateSources<'_>,
) -> Result<Cow<'v, str>, TemplateError> {
    let Some(start) = value.find("$(") else {
        return Ok(Cow::Borrowed(value));
    };
    let inner_start = start + 2;
    let Some(len) = value[inner_start..].find(')') else {
        return Ok(Cow::Borrowed(value));
    };
    let inner = &value[inner_start..inner_start + len];
    let bad = || TemplateError::BadExpression(value.to_string());
    let (source, key) = parse_ai_expression(inner).ok_or_else(bad)?;
    let found = lookup(src, source, &key).ok_or_else(|| TemplateError::Missing {
        source_name: source.name().to_string(),
        key: key.clone(),
    })?;
    let rest = &value[inner_start + len + 1..];
    let mut out = String::with_capacity(start + found.len() + rest.len());
    out.push_str(&value[..start]);
    out.push_str(&found);
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// request-transformer semantics: every `$(…)` in the value is rendered (missing values render as "", as Kong's Penlight templates do).
pub fn render_transformer<'v>(
    value: &'v str,
    src: &TemplateSources<'_>,
) -> Result<Cow<'v, str>, TemplateError> {
    let bytes = value.as_bytes();
    let mut out: Option<String> = None;
    let mut literal_from = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'(' {
            if let Some(close) = balanced_close(bytes, i + 1) {
                let inner = &value[i + 2..close];
                let rendered = eval_transformer(inner, src).map_err(|e| match e {
                    EvalError::Syntax => TemplateError::BadExpression(value.to_string()),
                    EvalError::Nil(source, key) => TemplateError::Missing {
                        source_name: source.name().to_string(),
                        key,
                    },
                })?;
                let o = out.get_or_insert_with(|| String::with_capacity(value.len()));
                o.push_str(&value[literal_from..i]);
                if let Some(r) = rendered {
                    o.push_str(&r);
                }
                i = close + 1;
                literal_from = i;
                continue;
            }
        }
        i += 1;
    }
    Ok(match out {
        None => Cow::Borrowed(value),
        Some(mut o) => {
            o.push_str(&value[literal_from..]);
            Cow::Owned(o)
        }
    })
}

/// True when a value contains a template (so config compile can precompute static values).
pub fn has_template(value: &str) -> bool {
    // Both renderers need a `)` somewhere after the first `$(`; without one, both return the
    // value unchanged, so it is safe to precompute.
    value
        .find("$(")
        .is_some_and(|start| value[start + 2..].contains(')'))
}

/// The request tables a template can name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    Headers,
    QueryParams,
    UriCaptures,
}

impl Source {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "headers" => Some(Source::Headers),
            "query_params" => Some(Source::QueryParams),
            "uri_captures" => Some(Source::UriCaptures),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Source::Headers => "headers",
            Source::QueryParams => "query_params",
            Source::UriCaptures => "uri_captures",
        }
    }
}

fn lookup<'a>(src: &TemplateSources<'a>, source: Source, key: &str) -> Option<Cow<'a, str>> {
    match source {
        Source::Headers => header_value(src.headers, key),
        Source::QueryParams => src
            .query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| Cow::Borrowed(v.as_str())),
        Source::UriCaptures => src.uri_captures.get(key).map(Cow::Borrowed),
    }
}

fn header_value<'a>(headers: &'a HeaderMap, key: &str) -> Option<Cow<'a, str>> {
    let lower = key.to_ascii_lowercase();
    let value = match headers.get(lower.as_str()) {
        Some(v) => v,
        None if lower.contains('_') => headers.get(lower.replace('_', "-").as_str())?,
        None => return None,
    };
    // Header bytes may be obs-text; Kong hands them over raw, we keep what UTF-8 allows.
    Some(String::from_utf8_lossy(value.as_bytes()))
}

/// Kong splits on `.` and wants exactly two parts; the bracket forms are our addition.
fn parse_ai_expression(inner: &str) -> Option<(Source, String)> {
    if let Ok(tokens) = tokenize(inner) {
        if let [Token::Name(name), Token::LBracket, key, Token::RBracket] = tokens.as_slice() {
            let source = Source::from_name(name)?;
            return match key {
                Token::Str(s) => Some((source, s.clone())),
                Token::Int(n) => Some((source, n.clone())),
                _ => None,
            };
        }
    }
    let mut parts = inner.split('.');
    let (Some(source), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    Some((Source::from_name(source)?, key.to_string()))
}

/// Index of the `)` matching the `(` at `open`, counting only parentheses (Lua's `%b()`).
fn balanced_close(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Str(String),
    Int(String),
    Dot,
    Concat,
    LBracket,
    RBracket,
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Token>, EvalError> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        match c {
            ' ' | '\t' | '\r' | '\n' => {
                chars.next();
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Name(name));
            }
            '0'..='9' => {
                let mut n = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_ascii_digit() {
                        n.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                // `1.5`, `0x1` and friends are numbers we do not model.
                if chars
                    .peek()
                    .is_some_and(|&(_, c)| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(EvalError::Syntax);
                }
                out.push(Token::Int(n));
            }
            '"' | '\'' => {
                chars.next();
                out.push(Token::Str(lua_string(&mut chars, c)?));
            }
            '.' => {
                chars.next();
                if chars.peek().is_some_and(|&(_, c)| c == '.') {
                    chars.next();
                    if chars.peek().is_some_and(|&(_, c)| c == '.') {
                        return Err(EvalError::Syntax);
                    }
                    out.push(Token::Concat);
                } else {
                    out.push(Token::Dot);
                }
            }
            '[' => {
                chars.next();
                // `[[long strings]]` and `[=[` are not modelled.
                if chars.peek().is_some_and(|&(_, c)| c == '[' || c == '=') {
                    return Err(EvalError::Syntax);
                }
                out.push(Token::LBracket);
            }
            ']' => {
                chars.next();
                out.push(Token::RBracket);
            }
            '(' => {
                chars.next();
                out.push(Token::LParen);
            }
            ')' => {
                chars.next();
                out.push(Token::RParen);
            }
            _ => return Err(EvalError::Syntax),
        }
    }
    Ok(out)
}

/// Reads a short Lua string after its opening quote, decoding the common escapes.
fn lua_string(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    quote: char,
) -> Result<String, EvalError> {
    let mut s = String::new();
    loop {
        let Some((_, c)) = chars.next() else {
            return Err(EvalError::Syntax);
        };
        match c {
            c if c == quote => return Ok(s),
            '\n' | '\r' => return Err(EvalError::Syntax),
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return Err(EvalError::Syntax);
                };
                s.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'a' => '\x07',
                    'b' => '\x08',
                    'f' => '\x0c',
                    'v' => '\x0b',
                    '\\' | '"' | '\'' => e,
                    '0'..='9' => {
                        let mut code = e.to_digit(10).unwrap_or(0);
                        for _ in 0..2 {
                            match chars.peek().and_then(|&(_, d)| d.to_digit(10)) {
                                Some(d) => {
                                    code = code * 10 + d;
                                    chars.next();
                                }
                                None => break,
                            }
                        }
                        // Lua escapes are bytes; only ASCII maps onto a char unambiguously.
                        if code > 127 {
                            return Err(EvalError::Syntax);
                        }
                        char::from_u32(code).ok_or(EvalError::Syntax)?
                    }
                    _ => return Err(EvalError::Syntax),
                });
            }
            c => s.push(c),
        }
    }
}

#[derive(Debug)]
enum EvalError {
    Syntax,
    /// A nil operand of `..`: Lua raises "attempt to concatenate a nil value".
    Nil(Source, String),
}

/// A parsed operand: a literal or one table lookup.
#[derive(Debug)]
enum Term {
    Literal(String),
    Lookup(Source, String),
    Group(Box<Expr>),
}

/// `alt or alt or …`, each alternative being `term .. term .. …`.
#[derive(Debug)]
struct Expr(Vec<Vec<Term>>);

/// Parentheses nest recursively; this bounds the stack on hostile input.
const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn bump(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, EvalError> {
        if depth > MAX_DEPTH {
            return Err(EvalError::Syntax);
        }
        let mut alts = vec![self.concat(depth)?];
        while matches!(self.peek(), Some(Token::Name(n)) if n == "or") {
            self.pos += 1;
            alts.push(self.concat(depth)?);
        }
        Ok(Expr(alts))
    }

    fn concat(&mut self, depth: usize) -> Result<Vec<Term>, EvalError> {
        let mut terms = vec![self.term(depth)?];
        while self.peek() == Some(&Token::Concat) {
            self.pos += 1;
            terms.push(self.term(depth)?);
        }
        Ok(terms)
    }

    fn term(&mut self, depth: usize) -> Result<Term, EvalError> {
        match self.bump() {
            Some(Token::Str(s)) => Ok(Term::Literal(s)),
            Some(Token::LParen) => {
                let inner = self.expr(depth + 1)?;
                match self.bump() {
                    Some(Token::RParen) => Ok(Term::Group(Box::new(inner))),
                    _ => Err(EvalError::Syntax),
                }
            }
            Some(Token::Name(name)) => {
                // `shared` (kong.ctx.shared) and every other global are out of scope.
                let source = Source::from_name(&name).ok_or(EvalError::Syntax)?;
                let key = match (self.bump(), self.bump()) {
                    (Some(Token::Dot), Some(Token::Name(k))) if !is_lua_keyword(&k) => k,
                    (Some(Token::LBracket), Some(Token::Str(k) | Token::Int(k))) => {
                        match self.bump() {
                            Some(Token::RBracket) => k,
                            _ => return Err(EvalError::Syntax),
                        }
                    }
                    _ => return Err(EvalError::Syntax),
                };
                Ok(Term::Lookup(source, key))
            }
            _ => Err(EvalError::Syntax),
        }
    }
}

/// Reserved words cannot follow `.` in Lua (`headers.end` does not compile).
fn is_lua_keyword(name: &str) -> bool {
    matches!(
        name,
        "and"
            | "break"
            | "do"
            | "else"
            | "elseif"
            | "end"
            | "false"
            | "for"
            | "function"
            | "goto"
            | "if"
            | "in"
            | "local"
            | "nil"
            | "not"
            | "or"
            | "repeat"
            | "return"
            | "then"
            | "true"
            | "until"
            | "while"
    )
}

fn eval_transformer<'a>(
    inner: &str,
    src: &TemplateSources<'a>,
) -> Result<Option<Cow<'a, str>>, EvalError> {
    let mut parser = Parser {
        tokens: tokenize(inner)?,
        pos: 0,
    };
    let expr = parser.expr(0)?;
    if parser.pos != parser.tokens.len() {
        return Err(EvalError::Syntax);
    }
    eval_expr(&expr, src)
}

fn eval_expr<'a>(
    expr: &Expr,
    src: &TemplateSources<'a>,
) -> Result<Option<Cow<'a, str>>, EvalError> {
    // Lua's `or` yields the first operand that is not nil (our values are never `false`).
    for alt in &expr.0 {
        if let Some(v) = eval_concat(alt, src)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

fn eval_concat<'a>(
    terms: &[Term],
    src: &TemplateSources<'a>,
) -> Result<Option<Cow<'a, str>>, EvalError> {
    if let [single] = terms {
        return eval_term(single, src);
    }
    let mut out = String::new();
    for t in terms {
        match eval_term(t, src)? {
            Some(v) => out.push_str(&v),
            None => {
                return Err(match t {
                    Term::Lookup(source, key) => EvalError::Nil(*source, key.clone()),
                    _ => EvalError::Syntax,
                })
            }
        }
    }
    Ok(Some(Cow::Owned(out)))
}

fn eval_term<'a>(
    term: &Term,
    src: &TemplateSources<'a>,
) -> Result<Option<Cow<'a, str>>, EvalError> {
    match term {
        Term::Literal(s) => Ok(Some(Cow::Owned(s.clone()))),
        Term::Lookup(source, key) => Ok(lookup(src, *source, key)),
        Term::Group(e) => eval_expr(e, src),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    struct Fixture {
        headers: HeaderMap,
        query: Vec<(String, String)>,
        captures: UriCaptures,
    }

    impl Fixture {
        fn new() -> Self {
            let mut headers = HeaderMap::new();
            headers.insert("x-model", HeaderValue::from_static("gpt-4o"));
            headers.insert("x-empty", HeaderValue::from_static(""));
            headers.append("x-multi", HeaderValue::from_static("first"));
            headers.append("x-multi", HeaderValue::from_static("second"));
            headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
            headers.insert(
                "x-bytes",
                HeaderValue::from_bytes(b"caf\xc3\xa9 \xff")
                    .unwrap_or(HeaderValue::from_static("")),
            );
            let query = vec![
                ("version".to_string(), "2024-02-01".to_string()),
                ("dup".to_string(), "one".to_string()),
                ("dup".to_string(), "two".to_string()),
                ("Case".to_string(), "upper".to_string()),
                ("flag".to_string(), String::new()),
            ];
            let captures = UriCaptures {
                named: vec![
                    ("deployment".to_string(), "dep-1".to_string()),
                    ("inst".to_string(), "eastus".to_string()),
                ],
                positional: vec!["dep-1".to_string(), "eastus".to_string(), String::new()],
            };
            Fixture {
                headers,
                query,
                captures,
            }
        }

        fn src(&self) -> TemplateSources<'_> {
            TemplateSources {
                headers: &self.headers,
                query: &self.query,
                uri_captures: &self.captures,
            }
        }
    }

    fn ai(v: &str) -> Result<String, TemplateError> {
        let f = Fixture::new();
        render_ai(v, &f.src()).map(|c| c.into_owned())
    }

    fn rt(v: &str) -> Result<String, TemplateError> {
        let f = Fixture::new();
        render_transformer(v, &f.src()).map(|c| c.into_owned())
    }

    fn missing(source: &str, key: &str) -> TemplateError {
        TemplateError::Missing {
            source_name: source.to_string(),
            key: key.to_string(),
        }
    }

    fn bad(v: &str) -> TemplateError {
        TemplateError::BadExpression(v.to_string())
    }

    #[test]
    fn uri_captures_get() {
        let c = Fixture::new().captures;
        assert_eq!(c.get("deployment"), Some("dep-1"));
        assert_eq!(c.get("1"), Some("dep-1"));
        assert_eq!(c.get("2"), Some("eastus"));
        assert_eq!(c.get("3"), Some(""));
        assert_eq!(c.get("4"), None);
        assert_eq!(c.get("0"), None);
        assert_eq!(c.get("01"), None);
        assert_eq!(c.get("+1"), None);
        assert_eq!(c.get("-1"), None);
        assert_eq!(c.get(""), None);
        assert_eq!(c.get("99999999999999999999999"), None);
        assert_eq!(c.get("nope"), None);
        let named_digit = UriCaptures {
            named: vec![("1".into(), "named".into())],
            positional: vec!["pos".into()],
        };
        assert_eq!(named_digit.get("1"), Some("named"));
        assert_eq!(UriCaptures::default().get("1"), None);
    }

    #[test]
    fn no_template_is_borrowed() {
        let f = Fixture::new();
        for v in [
            "",
            "plain",
            "$",
            "$x",
            "(x)",
            "$ (headers.x)",
            "$(unclosed",
            "a)$(b",
        ] {
            assert!(
                matches!(render_ai(v, &f.src()), Ok(Cow::Borrowed(s)) if s == v),
                "{v}"
            );
            assert!(
                matches!(render_transformer(v, &f.src()), Ok(Cow::Borrowed(s)) if s == v),
                "{v}"
            );
        }
    }

    #[test]
    fn has_template_cases() {
        assert!(has_template("$(headers.x)"));
        assert!(has_template("pre $(a) post"));
        assert!(has_template("$()"));
        assert!(has_template("$(( )"));
        assert!(!has_template(""));
        assert!(!has_template("plain"));
        assert!(!has_template("$("));
        assert!(!has_template("$(headers.x"));
        assert!(!has_template(") $("));
        assert!(!has_template("$ (x)"));
        assert!(!has_template("é$(ü"));
    }

    #[test]
    fn ai_sources() {
        assert_eq!(ai("$(headers.x-model)").as_deref(), Ok("gpt-4o"));
        assert_eq!(ai("$(headers.X-Model)").as_deref(), Ok("gpt-4o"));
        assert_eq!(ai("$(headers.x_model)").as_deref(), Ok("gpt-4o"));
        assert_eq!(ai("$(headers.X_MODEL)").as_deref(), Ok("gpt-4o"));
        assert_eq!(ai("$(query_params.version)").as_deref(), Ok("2024-02-01"));
        assert_eq!(ai("$(uri_captures.deployment)").as_deref(), Ok("dep-1"));
        assert_eq!(ai("$(uri_captures.inst)").as_deref(), Ok("eastus"));
    }

    #[test]
    fn ai_bracket_forms() {
        assert_eq!(ai(r#"$(headers["x-model"])"#).as_deref(), Ok("gpt-4o"));
        assert_eq!(ai("$(headers['X-Model'])").as_deref(), Ok("gpt-4o"));
        assert_eq!(
            ai(r#"$(query_params["version"])"#).as_deref(),
            Ok("2024-02-01")
        );
        assert_eq!(ai(r#"$(uri_captures["inst"])"#).as_deref(), Ok("eastus"));
        assert_eq!(ai("$(uri_captures[1])").as_deref(), Ok("dep-1"));
        assert_eq!(ai("$(uri_captures[ 2 ])").as_deref(), Ok("eastus"));
        assert_eq!(ai("$(uri_captures[9])"), Err(missing("uri_captures", "9")));
        assert_eq!(ai(r#"$(shared["x"])"#), Err(bad(r#"$(shared["x"])"#)));
    }

    #[test]
    fn ai_replaces_only_first_and_keeps_surroundings() {
        assert_eq!(
            ai("https://$(uri_captures.inst).example.com/x").as_deref(),
            Ok("https://eastus.example.com/x")
        );
        assert_eq!(
            ai("$(headers.x-model)-$(query_params.version)").as_deref(),
            Ok("gpt-4o-$(query_params.version)")
        );
        assert_eq!(ai("a $(headers.x-model) b").as_deref(), Ok("a gpt-4o b"));
    }

    #[test]
    fn ai_missing_values() {
        assert_eq!(ai("$(headers.x-nope)"), Err(missing("headers", "x-nope")));
        assert_eq!(
            ai("$(query_params.nope)"),
            Err(missing("query_params", "nope"))
        );
        assert_eq!(
            ai("$(query_params.case)"),
            Err(missing("query_params", "case"))
        );
        assert_eq!(
            ai("$(uri_captures.nope)"),
            Err(missing("uri_captures", "nope"))
        );
        assert_eq!(ai("$(headers.)"), Err(missing("headers", "")));
        assert_eq!(
            ai("$(uri_captures.uri_cap_3)").map_err(|e| e.to_string()),
            Err("uri_captures key uri_cap_3 was not provided".to_string())
        );
    }

    #[test]
    fn ai_present_but_empty_is_a_value() {
        assert_eq!(ai("$(headers.x-empty)").as_deref(), Ok(""));
        assert_eq!(ai("[$(query_params.flag)]").as_deref(), Ok("[]"));
        assert_eq!(ai("$(uri_captures.3)").as_deref(), Ok(""));
    }

    #[test]
    fn ai_multi_valued_uses_first() {
        assert_eq!(ai("$(headers.x-multi)").as_deref(), Ok("first"));
        assert_eq!(ai("$(query_params.dup)").as_deref(), Ok("one"));
    }

    #[test]
    fn ai_bad_expressions() {
        for v in [
            "$()",
            "$(headers)",
            "$(uri_captures_uri_cap_1)",
            "$(a.b.c)",
            "$(headers.x.y)",
            "$(.x)",
            "$(shared.k)",
            "$(env.HOME)",
            "$( headers.x-model)",
            "x $(headers[x-model]) y",
        ] {
            assert_eq!(ai(v), Err(bad(v)), "{v}");
        }
        assert_eq!(
            ai("$(uri_captures_uri_cap_1)").map_err(|e| e.to_string()),
            Err("cannot parse expression for field '$(uri_captures_uri_cap_1)'".to_string())
        );
    }

    #[test]
    fn ai_first_close_paren_ends_the_expression() {
        // Lua's `(.-)%)` stops at the first `)`, so a `)` inside brackets cuts the key.
        assert_eq!(ai(r#"$(headers["a)b"])"#), Err(bad(r#"$(headers["a)b"])"#)));
        assert_eq!(ai("$(headers.x-model))").as_deref(), Ok("gpt-4o)"));
    }

    #[test]
    fn ai_non_utf8_header_bytes_are_lossy() {
        assert_eq!(ai("$(headers.x-bytes)").as_deref(), Ok("café \u{fffd}"));
    }

    #[test]
    fn transformer_sources_and_forms() {
        assert_eq!(rt("$(headers.x_model)").as_deref(), Ok("gpt-4o"));
        assert_eq!(rt(r#"$(headers["x-model"])"#).as_deref(), Ok("gpt-4o"));
        assert_eq!(rt("$(headers['X-MODEL'])").as_deref(), Ok("gpt-4o"));
        assert_eq!(rt("$(headers.authorization)").as_deref(), Ok("Bearer abc"));
        assert_eq!(rt("$(query_params.version)").as_deref(), Ok("2024-02-01"));
        assert_eq!(rt(r#"$(query_params["Case"])"#).as_deref(), Ok("upper"));
        assert_eq!(rt("$(uri_captures.deployment)").as_deref(), Ok("dep-1"));
        assert_eq!(rt(r#"$(uri_captures["inst"])"#).as_deref(), Ok("eastus"));
        assert_eq!(rt("$(uri_captures[1])").as_deref(), Ok("dep-1"));
        assert_eq!(rt("$(uri_captures[2])").as_deref(), Ok("eastus"));
        assert_eq!(rt("$( headers . x_model )").as_deref(), Ok("gpt-4o"));
        assert_eq!(rt("$(headers.x_multi)").as_deref(), Ok("first"));
        assert_eq!(rt("$(query_params.dup)").as_deref(), Ok("one"));
    }

    #[test]
    fn transformer_renders_every_placeholder() {
        assert_eq!(
            rt("$(headers.x_model)/$(query_params.version)/$(uri_captures[2])").as_deref(),
            Ok("gpt-4o/2024-02-01/eastus")
        );
        assert_eq!(
            rt("Basic $(query_params.version)!").as_deref(),
            Ok("Basic 2024-02-01!")
        );
        assert_eq!(
            rt("$(headers.x_model)$(headers.x_model)").as_deref(),
            Ok("gpt-4ogpt-4o")
        );
    }

    #[test]
    fn transformer_missing_renders_empty() {
        // Penlight compiles `$(e)` to `tostring(e or '')`: nil is "", not an error.
        assert_eq!(rt("$(headers.nope)").as_deref(), Ok(""));
        assert_eq!(rt("a-$(query_params.nope)-b").as_deref(), Ok("a--b"));
        assert_eq!(rt("$(uri_captures[7])").as_deref(), Ok(""));
        assert_eq!(rt("$(query_params.case)").as_deref(), Ok(""));
        assert_eq!(rt("$(headers.x_empty)|").as_deref(), Ok("|"));
    }

    #[test]
    fn transformer_or_defaults() {
        assert_eq!(
            rt(r#"$(uri_captures["user-id"] or query_params["user"] or "unknown")"#).as_deref(),
            Ok("unknown")
        );
        assert_eq!(
            rt("$(headers.nope or headers.x_model or 'z')").as_deref(),
            Ok("gpt-4o")
        );
        assert_eq!(rt("$(headers.x_model or 'z')").as_deref(), Ok("gpt-4o"));
        // "" is truthy in Lua.
        assert_eq!(rt("$(headers.x_empty or 'z')").as_deref(), Ok(""));
        assert_eq!(rt("$(headers.a or headers.b)").as_deref(), Ok(""));
        assert_eq!(rt("$((headers.a or 'p') or 'q')").as_deref(), Ok("p"));
    }

    #[test]
    fn transformer_concat() {
        assert_eq!(
            rt("$('Bearer ' .. query_params.version)").as_deref(),
            Ok("Bearer 2024-02-01")
        );
        assert_eq!(
            rt("$(headers.nope or 'a' .. 'b')").as_deref(),
            Ok("ab"),
            "`..` binds tighter than `or`"
        );
        assert_eq!(
            rt("$('x' .. headers.nope)"),
            Err(missing("headers", "nope"))
        );
        assert_eq!(rt("$('x' .. (headers.nope or 'd'))").as_deref(), Ok("xd"));
        assert_eq!(
            rt("$('x' .. (headers.nope))"),
            Err(bad("$('x' .. (headers.nope))"))
        );
    }

    #[test]
    fn transformer_string_literals_and_escaping() {
        // Kong's documented escape: a template that yields the literal text.
        assert_eq!(
            rt("$('$(something_that_needs_to_escaped)')").as_deref(),
            Ok("$(something_that_needs_to_escaped)")
        );
        assert_eq!(rt(r#"$("a\"b")"#).as_deref(), Ok("a\"b"));
        assert_eq!(rt(r"$('it\'s')").as_deref(), Ok("it's"));
        assert_eq!(rt(r"$('tab\there')").as_deref(), Ok("tab\there"));
        assert_eq!(rt(r"$('\65\066')").as_deref(), Ok("AB"));
        assert_eq!(rt("$('ünï')").as_deref(), Ok("ünï"));
        assert_eq!(rt("$('')").as_deref(), Ok(""));
        // No backslash escape in Penlight templates: the backslash stays, the template renders.
        assert_eq!(rt(r"\$(headers.x_model)").as_deref(), Ok(r"\gpt-4o"));
    }

    #[test]
    fn transformer_unbalanced_stays_literal() {
        assert_eq!(rt("$(").as_deref(), Ok("$("));
        assert_eq!(rt("$(headers.").as_deref(), Ok("$(headers."));
        assert_eq!(
            rt("$((headers.x_model)").as_deref(),
            Ok("$((headers.x_model)")
        );
        // A later balanced placeholder still renders after an unbalanced `$(`.
        assert_eq!(rt("$( $(headers.x_model)").as_deref(), Ok("$( gpt-4o"));
        assert_eq!(rt("$$(headers.x_model)").as_deref(), Ok("$gpt-4o"));
        assert_eq!(rt("$(headers.x_model)$").as_deref(), Ok("gpt-4o$"));
    }

    #[test]
    fn transformer_bad_expressions() {
        for v in [
            "$()",
            "$( )",
            "$(shared.k)",
            "$(shared['k'])",
            "$(headers)",
            "$(headers.x-y)",
            "$(headers.x.y)",
            "$(headers[x])",
            "$(headers['x'] ['y'])",
            "$(headers.x:lower())",
            "$(type(headers.x))",
            "$(ngx.var.x)",
            "$(1)",
            "$(1.5)",
            "$(nil)",
            "$('a' 'b')",
            "$('unterminated)",
            "$(\"a\nb\")",
            "$('\\q')",
            "$('\\200')",
            "$([[long]])",
            "$(headers.or)",
            "$(headers.x or)",
            "$(or 'x')",
            "$('a' .. )",
            "$('a' ... 'b')",
            "$(headers.end)",
            "$(headers.nil)",
            "$(headers.1)",
            "$(#headers)",
            "$(headers.x == 'y')",
            "$(function() return 'x' end)",
            "pre $(shared.k) post",
        ] {
            assert_eq!(rt(v), Err(bad(v)), "{v:?}");
        }
        // Keywords are fine as quoted keys.
        assert_eq!(rt("$(headers['or'] or 'k')").as_deref(), Ok("k"));
        assert_eq!(rt("$(shared.k)"), Err(bad("$(shared.k)")));
        assert_eq!(rt("a $(headers.x-y) b"), Err(bad("a $(headers.x-y) b")));
    }

    #[test]
    fn transformer_deep_nesting_is_bounded() {
        let deep = format!("$({}'x'{})", "(".repeat(200), ")".repeat(200));
        assert_eq!(rt(&deep), Err(bad(&deep)));
        let ok = format!("$({}'x'{})", "(".repeat(10), ")".repeat(10));
        assert_eq!(rt(&ok).as_deref(), Ok("x"));
    }

    #[test]
    fn odd_inputs_never_panic() {
        let f = Fixture::new();
        let samples = [
            "",
            "$",
            "$(",
            "$()",
            "$(headers.",
            "$(headers.)",
            "$(headers[",
            "$(headers[\"",
            "$(headers[\"x\"",
            "$(headers['x')",
            ")",
            "$)",
            "$(()",
            "$())",
            "$(\u{0})",
            "$(ünïcödé.ß)",
            "$(headers.ß)",
            "ü$(headers.x_model)ü",
            "$(headers['ü'])",
            "$(query_params['\u{1F600}'])",
            "$(uri_captures[18446744073709551616])",
            "$(uri_captures[0])",
            "$('\\",
            "$('\\9",
            "$(\"\\x41\")",
            "\u{FEFF}$(",
            "$($($(",
            "))))$((((",
            "$(headers.x_model or",
            "$('a'..'b'..'c')",
            "$(.)",
            "$(..)",
            "$(...)",
            "$([)",
            "$(])",
            "$(\t)",
            "$(\r\n)",
            "$(headers\n.x_model)",
        ];
        for s in samples {
            let _ = render_ai(s, &f.src());
            let _ = render_transformer(s, &f.src());
            let _ = has_template(s);
        }
        // Every prefix of a tricky string, at char boundaries.
        let tricky = "x$(headers['é-$(q)'] or 'ü') $(uri_captures[1]) $(";
        for (i, _) in tricky.char_indices() {
            let _ = render_ai(&tricky[..i], &f.src());
            let _ = render_transformer(&tricky[..i], &f.src());
        }
        // A pseudo-random soup of the interesting characters.
        let alphabet: Vec<char> = "$()[]'\"\\. orheadsquey_pmcti1é".chars().collect();
        let mut state = 0x2545_f491_u64;
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(state % 24) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let _ = render_ai(&s, &f.src());
            let _ = render_transformer(&s, &f.src());
            let _ = has_template(&s);
        }
    }

    #[test]
    fn rendered_results_only_allocate_when_needed() {
        let f = Fixture::new();
        assert!(matches!(
            render_transformer("$(headers.x_model)", &f.src()),
            Ok(Cow::Owned(_))
        ));
        assert!(matches!(
            render_ai("$(headers.x_model)", &f.src()),
            Ok(Cow::Owned(_))
        ));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            missing("headers", "x").to_string(),
            "headers key x was not provided"
        );
        assert_eq!(
            bad("$(x)").to_string(),
            "cannot parse expression for field '$(x)'"
        );
    }
}
