//! SQL text as upkeep handles it for the servers: split into statements (so each can be
//! journalled), a declared schema checked to hold only `CREATE TABLE` and `CREATE INDEX` on
//! names of its own, and a task's statements told apart (data, or DDL that MySQL commits at
//! once). The tokenizer and parser are sqlparser's; the server stays the judge of what the
//! statements mean.

use sqlparser::ast::Statement;
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::base::dburl::Engine;

fn dialect(engine: Engine) -> Box<dyn Dialect> {
    match engine {
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
        _ => Box::new(MySqlDialect {}),
    }
}

fn tokens(sql: &str, engine: Engine) -> Result<Vec<TokenWithSpan>, String> {
    let d = dialect(engine);
    Tokenizer::new(d.as_ref(), sql)
        .with_unescape(false)
        .tokenize_with_location()
        .map_err(|e| e.to_string())
}

/// Byte offsets of each line's start, to turn the tokenizer's (line, column) into offsets.
fn offset(sql: &str, line_starts: &[usize], line: u64, column: u64) -> usize {
    let start = line_starts
        .get(line.saturating_sub(1) as usize)
        .copied()
        .unwrap_or(sql.len());
    sql[start..]
        .char_indices()
        .nth(column.saturating_sub(1) as usize)
        .map(|(i, _)| start + i)
        .unwrap_or(sql.len())
}

/// The statements of `sql`, each as written (without its `;`), empty ones dropped.
pub fn split(sql: &str, engine: Engine) -> Result<Vec<String>, String> {
    let toks = tokens(sql, engine)?;
    let mut line_starts = vec![0];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let mut out = Vec::new();
    let mut from = 0;
    let mut meaningful = false;
    for t in &toks {
        match &t.token {
            Token::SemiColon => {
                let at = offset(sql, &line_starts, t.span.start.line, t.span.start.column);
                if meaningful {
                    out.push(sql[from..at].trim().to_string());
                }
                from = at + 1;
                meaningful = false;
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => meaningful = true,
        }
    }
    if meaningful {
        out.push(sql[from..].trim().to_string());
    }
    Ok(out)
}

/// Words (unquoted, outside strings and comments) a declared schema may not hold: options
/// that put files anywhere on the server, reach other servers or join other tables.
const FORBIDDEN: &[&str] = &["DIRECTORY", "CONNECTION", "UNION", "TABLESPACE", "SERVER"];

/// Storage engines a MySQL declared schema may name.
const ENGINES: &[&str] = &["INNODB", "ARIA", "MYISAM"];

/// Check a declared schema for `engine`: each statement a `CREATE TABLE` (not `AS SELECT`,
/// `LIKE` or `OR REPLACE`) or a `CREATE INDEX`, on unqualified names (they land in the scratch
/// schema upkeep loads them into, never beside the site's tables). Returns the statements.
pub fn check_declared(sql: &str, engine: Engine) -> Result<Vec<String>, String> {
    let statements = split(sql, engine)?;
    let d = dialect(engine);
    for s in &statements {
        let first_line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s);
        let parsed = Parser::parse_sql(d.as_ref(), s)
            .map_err(|e| format!("{e} in `{}`", first_line.trim()))?;
        for st in &parsed {
            let (name, kind) = match st {
                Statement::CreateTable(t) => {
                    if t.query.is_some() || t.like.is_some() || t.clone.is_some() {
                        return Err(format!(
                            "`{}`: a table made from another (AS SELECT, LIKE) is data, not schema",
                            first_line.trim()
                        ));
                    }
                    if t.or_replace || t.temporary {
                        return Err(format!(
                            "`{}`: OR REPLACE and TEMPORARY have no place in a declared schema",
                            first_line.trim()
                        ));
                    }
                    (&t.name, "table")
                }
                Statement::CreateIndex(i) => {
                    if i.concurrently {
                        return Err(format!(
                            "`{}`: upkeep decides how an index is built (CONCURRENTLY on PostgreSQL); declare it plainly",
                            first_line.trim()
                        ));
                    }
                    (&i.table_name, "index's table")
                }
                _ => {
                    return Err(format!(
                        "`{}`: a declared schema holds CREATE TABLE and CREATE INDEX statements only",
                        first_line.trim()
                    ));
                }
            };
            if name.0.len() != 1 {
                return Err(format!(
                    "`{}`: the {kind} name {name} names a schema; declare tables by their name alone",
                    first_line.trim()
                ));
            }
        }
        let toks = tokens(s, engine)?;
        let words: Vec<String> = toks
            .iter()
            .filter_map(|t| match &t.token {
                Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
                Token::Word(w) => Some(format!("`{}`", w.value)),
                Token::Whitespace(_) | Token::Eq => None,
                other => Some(other.to_string()),
            })
            .collect();
        if let Some(w) = words.iter().find(|w| FORBIDDEN.contains(&w.as_str())) {
            return Err(format!(
                "`{}`: {w} is not allowed in a declared schema (it reaches files or servers beyond the database)",
                first_line.trim()
            ));
        }
        if engine == Engine::Mysql {
            for pair in words.windows(2) {
                if pair[0] == "ENGINE" && !ENGINES.contains(&pair[1].to_ascii_uppercase().as_str())
                {
                    return Err(format!(
                        "`{}`: ENGINE={} is not allowed in a declared schema (InnoDB, Aria or MyISAM)",
                        first_line.trim(),
                        pair[1]
                    ));
                }
            }
        }
    }
    Ok(statements)
}

/// The table each declared statement creates (`None` for an index), beside its text.
pub fn tables_created(statements: &[String], engine: Engine) -> Vec<Option<String>> {
    let d = dialect(engine);
    statements
        .iter()
        .map(|s| match Parser::parse_sql(d.as_ref(), s).ok()?.first()? {
            Statement::CreateTable(t) => t.name.0.last().map(|p| match p {
                // PostgreSQL folds an unquoted name to lower case.
                sqlparser::ast::ObjectNamePart::Identifier(i)
                    if engine == Engine::Postgres && i.quote_style.is_none() =>
                {
                    i.value.to_lowercase()
                }
                sqlparser::ast::ObjectNamePart::Identifier(i) => i.value.clone(),
                other => other.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// Whether a statement changes the schema (MySQL commits it at once, whatever transaction
/// is open): its first word is CREATE, ALTER, DROP, RENAME or TRUNCATE.
pub fn is_ddl(statement: &str, engine: Engine) -> bool {
    tokens(statement, engine)
        .ok()
        .and_then(|t| {
            t.into_iter().find_map(|t| match t.token {
                Token::Word(w) => Some(w.value.to_ascii_uppercase()),
                _ => None,
            })
        })
        .is_some_and(|w| {
            matches!(
                w.as_str(),
                "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keeping_text_with_quotes_and_comments() {
        let sql = "-- a comment; with a semicolon\nINSERT INTO t VALUES ('a;b', \"c\");\n/* x; */ UPDATE t SET v = 'é;'\n;\n;  ";
        let st = split(sql, Engine::Mysql).unwrap();
        assert_eq!(
            st,
            [
                "-- a comment; with a semicolon\nINSERT INTO t VALUES ('a;b', \"c\")",
                "/* x; */ UPDATE t SET v = 'é;'"
            ]
        );
        let pg = "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; SELECT 2";
        assert_eq!(split(pg, Engine::Postgres).unwrap().len(), 2);
    }

    #[test]
    fn a_declared_schema_is_tables_and_indexes_of_its_own() {
        let ok = "CREATE TABLE wp_posts (ID bigint(20) unsigned NOT NULL auto_increment, post_title text NOT NULL, PRIMARY KEY (ID), KEY post_title (post_title(10))) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\nCREATE INDEX t_idx ON wp_posts (ID);";
        assert_eq!(check_declared(ok, Engine::Mysql).unwrap().len(), 2);
        let pg = "CREATE TABLE pages (id bigserial PRIMARY KEY, title text NOT NULL DEFAULT '');\nCREATE UNIQUE INDEX pages_title ON pages (title);";
        assert_eq!(check_declared(pg, Engine::Postgres).unwrap().len(), 2);
        for (engine, bad, why) in [
            (
                Engine::Mysql,
                "CREATE TABLE other.t (a int)",
                "names a schema",
            ),
            (
                Engine::Postgres,
                "CREATE TABLE public.t (a int)",
                "names a schema",
            ),
            (
                Engine::Mysql,
                "CREATE TABLE t AS SELECT * FROM users",
                "data, not schema",
            ),
            (
                Engine::Mysql,
                "CREATE TABLE t (a int) DATA DIRECTORY = '/tmp'",
                "DIRECTORY",
            ),
            (
                Engine::Mysql,
                "CREATE TABLE t (a int) ENGINE=CONNECT",
                "ENGINE=CONNECT",
            ),
            (Engine::Mysql, "DROP TABLE users", "statements only"),
            (
                Engine::Postgres,
                "INSERT INTO t VALUES (1)",
                "statements only",
            ),
            (
                Engine::Postgres,
                "CREATE INDEX i ON public.t (a)",
                "names a schema",
            ),
        ] {
            let e = check_declared(bad, engine).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_declared("CREATE INDEX CONCURRENTLY i ON t (a)", Engine::Postgres).is_err());
    }

    #[test]
    fn ddl_is_told_from_data() {
        assert!(is_ddl("  alter table t add c int", Engine::Mysql));
        assert!(is_ddl("-- x\nCREATE INDEX i ON t(a)", Engine::Mysql));
        assert!(!is_ddl(
            "UPDATE wp_options SET option_value = '1'",
            Engine::Mysql
        ));
        assert!(!is_ddl("INSERT INTO t SELECT 1", Engine::Postgres));
    }
}
