use super::*;

const GOOD: &str = "\
# What the team reports
metrics:
  - name: revenue
    description: Net revenue of shipped line items
    owner: finance@example.com
    table: tpch.lineitem
    expression: sum(l_extendedprice * (1 - l_discount))
    filter: l_returnflag <> 'R'
    time_column: l_shipdate
    grain: month
    dimensions: [l_shipmode, l_linestatus]

  - name: order_count
    description: Orders placed
    owner: sales
    table: orders
    expression: count(*)
";

fn metric(d: &Draft, schema: &str) -> BusinessMetric {
    BusinessMetric {
        name: d.name.clone(),
        description: d.description.clone(),
        owner: d.owner.clone(),
        schema: schema.into(),
        table: d.table.rsplit('.').next().unwrap().into(),
        expression: d.expression.clone(),
        filter: d.filter.clone(),
        time_column: d.time_column.clone(),
        grain: d.grain,
        dimensions: d.dimensions.clone(),
        columns: BTreeSet::new(),
        file: d.file.clone(),
        line: d.line,
    }
}

#[test]
fn reads_definitions_with_their_lines() {
    let (drafts, problems) = parse("docs/metrics.yml", GOOD);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(drafts.len(), 2);
    assert_eq!((drafts[0].name.as_str(), drafts[0].line), ("revenue", 3));
    assert_eq!(drafts[0].grain, Some(Grain::Month));
    assert_eq!(drafts[0].dimensions, ["l_shipmode", "l_linestatus"]);
    // The parser writes the SQL back out: one expression, nothing else.
    assert_eq!(
        drafts[0].expression,
        "sum(l_extendedprice * (1 - l_discount))"
    );
    assert_eq!(
        (drafts[1].name.as_str(), drafts[1].line),
        ("order_count", 13)
    );
}

#[test]
fn a_bad_definition_is_reported_with_its_line_and_the_rest_load() {
    let text = "\
metrics:
  - name: good_one
    description: fine
    owner: me
    table: t
    expression: count(*)
  - name: typo
    description: a key nobody knows
    owner: me
    table: t
    expresion: count(*)
  - name: injected
    description: more than one expression
    owner: me
    table: t
    expression: count(*) FROM t; DROP TABLE t
  - name: no_time
    description: a grain with nothing to group
    owner: me
    table: t
    expression: count(*)
    grain: month
  - name: Bad-Name
    description: x
    owner: me
    table: t
    expression: count(*)
  - name: good_one
    description: the same name again
    owner: me
    table: t
    expression: sum(x)
";
    let (drafts, problems) = parse("docs/metrics/sales.yml", text);
    assert_eq!(
        drafts.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["good_one", "good_one"]
    );
    let lines: Vec<(usize, Option<&str>)> = problems
        .iter()
        .map(|p| (p.line, p.metric.as_deref()))
        .collect();
    assert_eq!(
        lines,
        [
            (11, Some("typo")), // the line of the unknown key itself
            (12, Some("injected")),
            (17, Some("no_time")),
            (23, Some("Bad-Name")),
        ]
    );
    assert!(problems[0].reason.contains("expresion"), "{}", problems[0]);
    assert!(problems[1].reason.contains("unexpected"), "{}", problems[1]);
    assert!(
        problems[2].reason.contains("time_column"),
        "{}",
        problems[2]
    );
    assert_eq!(
        problems[0].to_string(),
        format!(
            "docs/metrics/sales.yml line 11: metric 'typo': {}",
            problems[0].reason
        )
    );
}

#[test]
fn a_file_that_is_not_yaml_is_one_problem_at_its_line() {
    let (drafts, problems) = parse("docs/metrics.yml", "metrics:\n  - name: a\n    b: [\n");
    assert!(drafts.is_empty());
    assert_eq!(problems.len(), 1);
    assert!(problems[0].line >= 3, "{}", problems[0]);
    let (_, problems) = parse("docs/metrics.yml", "tables: []\n");
    assert!(problems[0].reason.contains("metrics"), "{}", problems[0]);
}

#[test]
fn names_used_twice_across_files_keep_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("metrics")).unwrap();
    std::fs::write(docs.join("metrics.yml"), GOOD).unwrap();
    std::fs::write(
        docs.join("metrics").join("more.yml"),
        "metrics:\n  - {name: revenue, description: again, owner: x, table: t, expression: count(*)}\n",
    )
    .unwrap();
    std::fs::write(docs.join("metrics").join("_draft.yml"), "not: [read").unwrap();
    let (drafts, problems) = read(dir.path());
    assert_eq!(drafts.len(), 2);
    assert_eq!(drafts[0].description, "Net revenue of shipped line items");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].file, "docs/metrics/more.yml");
    assert!(problems[0].reason.contains("already defined"));
}

#[test]
fn a_request_becomes_one_grouped_query() {
    let (drafts, _) = parse("docs/metrics.yml", GOOD);
    let revenue = metric(&drafts[0], "tpch");
    assert_eq!(
        revenue.sql(&MetricQuery::default()).unwrap(),
        "SELECT CAST(date_trunc('month', \"l_shipdate\") AS DATE) AS period, \
         sum(l_extendedprice * (1 - l_discount)) AS \"revenue\" FROM \"tpch\".\"lineitem\" \
         WHERE (l_returnflag <> 'R') GROUP BY 1 ORDER BY 1"
    );
    let asked = MetricQuery {
        grain: Some(Grain::Year),
        // in the metric's order, whatever the request's
        dimensions: vec!["l_linestatus".into(), "l_shipmode".into()],
        from: NaiveDate::from_ymd_opt(1995, 1, 1),
        to: NaiveDate::from_ymd_opt(1995, 12, 31),
        ..Default::default()
    };
    assert_eq!(
        revenue.sql(&asked).unwrap(),
        "SELECT CAST(date_trunc('year', \"l_shipdate\") AS DATE) AS period, \"l_shipmode\", \
         \"l_linestatus\", sum(l_extendedprice * (1 - l_discount)) AS \"revenue\" FROM \
         \"tpch\".\"lineitem\" WHERE (l_returnflag <> 'R') AND \"l_shipdate\" >= DATE \
         '1995-01-01' AND \"l_shipdate\" < DATE '1996-01-01' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    );
    let total = MetricQuery {
        total: true,
        ..Default::default()
    };
    assert!(!revenue.sql(&total).unwrap().contains("GROUP BY"));

    let err = revenue
        .sql(&MetricQuery {
            dimensions: vec!["l_comment".into()],
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("l_shipmode, l_linestatus"),
        "{err}"
    );
    let backwards = MetricQuery {
        from: NaiveDate::from_ymd_opt(1996, 1, 1),
        to: NaiveDate::from_ymd_opt(1995, 1, 1),
        ..Default::default()
    };
    assert!(matches!(
        revenue.sql(&backwards),
        Err(MetricQueryError::EmptyRange { .. })
    ));

    let orders = metric(&drafts[1], "tpch");
    assert_eq!(
        orders.sql(&MetricQuery::default()).unwrap(),
        "SELECT count(*) AS \"order_count\" FROM \"tpch\".\"orders\""
    );
    let by_month = MetricQuery {
        grain: Some(Grain::Month),
        ..Default::default()
    };
    assert!(matches!(
        orders.sql(&by_month),
        Err(MetricQueryError::NoTimeColumn { .. })
    ));
}
