"""SQL text as PostgreSQL reads it: where statements end, which `:name`s are parameters."""

from __future__ import annotations

from headrace.connectors.sql_text import named_parameters, split_statements


def test_statements_split_only_at_semicolons_in_code() -> None:
    sql = (
        "insert into t values ('a;b', 'it''s;'); -- c;\n"
        'select "x;y" from t /* ; */ ;; '
        "select $$ ; $$, $tag$ ;$tag$; "
        "select E'it\\'s; one', 'a\\'; select 2"
    )
    assert split_statements(sql) == [
        "insert into t values ('a;b', 'it''s;')",
        '-- c;\nselect "x;y" from t /* ; */',
        "select $$ ; $$, $tag$ ;$tag$",
        "select E'it\\'s; one', 'a\\'",
        "select 2",
    ]


def test_nothing_but_comments_and_semicolons_is_no_statement() -> None:
    assert split_statements("  ;  -- only a comment;\n /* and ; this */ ;") == []
    assert split_statements("select $1; select 2") == ["select $1", "select 2"]


def test_named_parameters_outside_strings_casts_and_comments() -> None:
    statement = "select :a, :b::text, ':c', x::int, :a, \":d\" -- :e\nwhere y = :b and z = $$ :f $$"
    text, names = named_parameters(statement)
    assert names == ["a", "b"]
    assert text == (
        "select $1, $2::text, ':c', x::int, $1, \":d\" -- :e\nwhere y = $2 and z = $$ :f $$"
    )
    assert named_parameters("select 1") == ("select 1", [])
