//! decK's client-side `${{ env "DECK_X" }}` substitution, done before the document is parsed.
//!
//! decK uses Go's text/template with `${{`/`}}` delimiters; only its small function set
//! (`env`, `toBool`, `toInt`, `toFloat`, `indent`) is meaningful in state files, so a tiny
//! evaluator is written here instead of pulling in a template engine.

use thiserror::Error;

/// A template that cannot be rendered; texts match decK's where decK has one.
#[derive(Debug, Error, PartialEq)]
pub enum EnvTemplateError {
    #[error("environment variables in the state file must be prefixed with 'DECK_', found: '{0}'")]
    NotPrefixed(String),
    #[error("environment variable '{0}' present in state file but not set")]
    NotSet(String),
    #[error("template: line {line}: {message}")]
    Syntax { line: usize, message: String },
}

/// Replaces every `${{ … }}` action in `text` using `lookup` for environment variables.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvTemplateError> {
    if !text.contains("${{") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let line = text.len() - rest.len() + start;
        let line = text[..line].matches('\n').count() + 1;
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else {
            return Err(EnvTemplateError::Syntax {
                line,
                message: "unclosed action".into(),
            });
        };
        out.push_str(&eval_pipeline(after[..end].trim(), line, lookup)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval_pipeline(
    action: &str,
    line: usize,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvTemplateError> {
    let syntax = |message: String| EnvTemplateError::Syntax { line, message };
    let mut value: Option<String> = None;
    for stage in split_pipeline(action) {
        let words = split_words(stage.trim()).map_err(syntax)?;
        let Some((func, args)) = words.split_first() else {
            return Err(syntax("missing value for command".into()));
        };
        let mut args: Vec<String> = args.to_vec();
        if let Some(v) = value.take() {
            args.push(v);
        }
        value = Some(match (func.as_str(), args.as_slice()) {
            ("env", [name]) => {
                if !name.starts_with("DECK_") {
                    return Err(EnvTemplateError::NotPrefixed(name.clone()));
                }
                lookup(name).ok_or_else(|| EnvTemplateError::NotSet(name.clone()))?
            }
            ("toBool", [v]) => match v.as_str() {
                "1" | "t" | "T" | "TRUE" | "true" | "True" => "true".into(),
                "0" | "f" | "F" | "FALSE" | "false" | "False" => "false".into(),
                _ => return Err(syntax(format!("toBool: invalid syntax: {v:?}"))),
            },
            ("toInt", [v]) => v
                .trim()
                .parse::<i64>()
                .map_err(|_| syntax(format!("toInt: invalid syntax: {v:?}")))?
                .to_string(),
            ("toFloat", [v]) => v
                .trim()
                .parse::<f64>()
                .map_err(|_| syntax(format!("toFloat: invalid syntax: {v:?}")))?
                .to_string(),
            ("indent", [n, v]) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| syntax(format!("indent: bad width {n:?}")))?;
                let pad = " ".repeat(n);
                format!("{pad}{}", v.replace('\n', &format!("\n{pad}")))
            }
            (f @ ("env" | "toBool" | "toInt" | "toFloat" | "indent"), _) => {
                return Err(syntax(format!("wrong number of args for {f}")));
            }
            (f, _) => return Err(syntax(format!("function \"{f}\" not defined"))),
        });
    }
    value.ok_or_else(|| syntax("missing value for command".into()))
}

fn split_pipeline(action: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_str = false;
    let mut start = 0;
    for (i, c) in action.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '|' if !in_str => {
                parts.push(&action[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&action[start..]);
    parts
}

fn split_words(stage: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = stage.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(o) => s.push(o),
                        None => return Err("unterminated quoted string".into()),
                    },
                    Some(o) => s.push(o),
                    None => return Err("unterminated quoted string".into()),
                }
            }
            words.push(s);
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                s.push(c);
                chars.next();
            }
            words.push(s);
        }
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DECK_OPENAI_TOKEN" => Some("Bearer sk-1".into()),
            "DECK_FLAG" => Some("1".into()),
            "DECK_N" => Some(" 42".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_env() {
        let out = substitute("header_value: ${{ env \"DECK_OPENAI_TOKEN\" }}\n", &env);
        assert_eq!(out, Ok("header_value: Bearer sk-1\n".to_string()));
    }

    #[test]
    fn pipes() {
        assert_eq!(
            substitute("${{ env \"DECK_FLAG\" | toBool }}", &env),
            Ok("true".into())
        );
        assert_eq!(
            substitute("${{env \"DECK_N\"|toInt}}", &env),
            Ok("42".into())
        );
    }

    #[test]
    fn deck_error_texts() {
        assert_eq!(
            substitute("${{ env \"OPENAI\" }}", &env).map_err(|e| e.to_string()),
            Err("environment variables in the state file must be prefixed with 'DECK_', found: 'OPENAI'".into())
        );
        assert_eq!(
            substitute("${{ env \"DECK_MISSING\" }}", &env).map_err(|e| e.to_string()),
            Err("environment variable 'DECK_MISSING' present in state file but not set".into())
        );
    }

    #[test]
    fn malformed_never_panics() {
        for t in [
            "${{",
            "${{ }}",
            "${{ env }}",
            "${{ env \"DECK_",
            "${{ nope \"x\" }}",
            "${{ | }}",
            "${{ \"x\" }}",
        ] {
            assert!(substitute(t, &env).is_err(), "{t}");
        }
        assert_eq!(
            substitute("plain $ {{ }}", &env),
            Ok("plain $ {{ }}".into())
        );
    }
}
