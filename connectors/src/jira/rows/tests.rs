use arrow::array::{Array, AsArray};
use arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};
use serde_json::json;

use super::*;

fn bundle() -> Bundle {
    let user = |name: &str, email: &str| json!({"displayName": name, "emailAddress": email, "accountId": "x"});
    let sla = json!({
        "completedCycles": [
            {"breached": true, "goalDuration": {"millis": 1000}, "elapsedTime": {"millis": 5000}},
            {"breached": false, "goalDuration": {"millis": 14400000}, "elapsedTime": {"millis": 60000}}
        ]
    });
    Bundle {
        issue: json!({
            "id": "10001", "key": "SUP-7",
            "fields": {
                "summary": "Login fails",
                "description": {"type": "doc", "version": 1, "content": [
                    {"type": "paragraph", "content": [{"type": "text", "text": "Steps"}]}]},
                "issuetype": {"name": "Bug"},
                "status": {"name": "In Progress", "statusCategory": {"key": "indeterminate", "name": "In Progress"}},
                "priority": {"name": "High"},
                "resolution": null,
                "project": {"key": "SUP", "name": "Support"},
                "creator": user("Ana Novak", "ana@example.com"),
                "reporter": user("Ana Novak", "ana@example.com"),
                "assignee": null,
                "created": "2024-03-01T00:30:00.000+0100",
                "updated": "2024-03-05T14:22:10.123+0100",
                "resolutiondate": null,
                "duedate": "2024-03-10",
                "labels": ["login", "čeština"],
                "attachment": [{"id": "20001", "filename": "a.png", "size": 12, "mimeType": "image/png",
                    "author": user("Ana Novak", "ana@example.com"), "created": "2024-03-02T10:00:00.000+0000",
                    "content": "https://x/rest/api/3/attachment/content/20001", "thumbnail": null}],
                "issuelinks": [
                    {"id": "30001", "type": {"name": "Blocks"}, "outwardIssue": {"key": "ENG-1", "fields": {
                        "summary": "Fix auth", "status": {"name": "Open"}, "priority": {"name": "Low"}}}},
                    {"id": "30002", "type": {"name": "Relates"}, "inwardIssue": {"key": "SUP-2", "fields": {
                        "summary": "Other", "status": {"name": "Done"}, "priority": {"name": "Medium"}}}}
                ],
                "customfield_10010": {"requestType": {"name": "Report a bug"}, "currentStatus": {"status": "Waiting for support"}},
                "customfield_10050": {"value": "S2", "id": "1"},
                "customfield_10060": {"rating": 4},
                "customfield_10161": {"ongoingCycle": {"breached": false, "goalDuration": {"millis": 7200000}, "elapsedTime": {"millis": 10}}},
                "customfield_10328": sla,
            }
        }),
        comments: vec![
            json!({"id": "40001", "author": user("Bo", "bo@example.com"), "body": "plain",
            "created": "2024-03-03T08:00:00.000-0500", "updated": "2024-03-03T08:00:00.000-0500",
            "updateAuthor": user("Bo", "bo@example.com")}),
        ],
        histories: vec![
            json!({"id": "50001", "author": user("Bo", "bo@example.com"), "created": "2024-03-04T00:00:00.000+0000",
            "items": [
                {"field": "status", "fieldtype": "jira", "from": "1", "fromString": "Open", "to": "3", "toString": "In Progress"},
                {"field": "labels", "fieldtype": "jira", "from": null, "fromString": "", "to": null, "toString": "login"}
            ]}),
        ],
        remote_links: vec![
            json!({"id": 60001, "application": {"type": "com.atlassian.confluence", "name": "Confluence"},
            "object": {"url": "https://wiki/x", "title": "Runbook"}}),
        ],
        sla: None,
        attachments: [(
            "20001".to_string(),
            "raw/jira/attachments/SUP-7/20001".to_string(),
        )]
        .into(),
    }
}

fn col<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch.column_by_name(name).map(|c| c.as_ref()).unwrap()
}

#[test]
fn an_issue_becomes_rows_of_all_six_tables() {
    let b = bundle();
    assert_eq!(
        b.month().as_deref(),
        Some("2024-02"),
        "created 00:30 +01:00 on 1 March is February in UTC"
    );
    assert!(b.is_open());
    let fields = JiraFields::default();
    let ctx = RowContext {
        site: "https://x",
        fields: &fields,
        synced_at_us: 1,
        raw_file: "raw/jira/issues/SUP-7.json",
    };
    let mut rows = TableRows::default();
    rows.add(&b, &ctx);
    let issues = rows.batch("issues").unwrap();
    assert_eq!(issues.num_rows(), 1);
    let text = |name: &str| col(&issues, name).as_string::<i32>().value(0).to_string();
    assert_eq!(text("issue_url"), "https://x/browse/SUP-7");
    assert_eq!(text("description"), "Steps");
    assert_eq!(text("status_category"), "In Progress");
    assert_eq!(text("labels"), r#"["login","čeština"]"#);
    assert_eq!(text("request_type"), "Report a bug");
    assert_eq!(text("request_status"), "Waiting for support");
    assert_eq!(text("severity"), "S2");
    assert!(col(&issues, "assignee_email").is_null(0));
    assert!(col(&issues, "resolved_at").is_null(0));
    let int = |name: &str| col(&issues, name).as_primitive::<Int64Type>().value(0);
    assert_eq!(
        (
            int("attachment_count"),
            int("comment_count"),
            int("issuelink_count")
        ),
        (1, 1, 2)
    );
    assert_eq!(int("satisfaction"), 4);
    assert_eq!(
        (
            int("first_response_goal_millis"),
            int("first_response_elapsed_millis")
        ),
        (7200000, 10)
    );
    // No ongoing cycle: the last completed one.
    assert_eq!(
        (
            int("time_to_resolution_goal_millis"),
            int("time_to_resolution_elapsed_millis")
        ),
        (14400000, 60000)
    );
    assert!(
        !col(&issues, "time_to_resolution_breached")
            .as_boolean()
            .value(0)
    );
    let created = col(&issues, "created_at")
        .as_primitive::<TimestampMicrosecondType>()
        .value(0);
    assert_eq!(
        created,
        chrono::DateTime::parse_from_rfc3339("2024-02-29T23:30:00Z")
            .unwrap()
            .timestamp_micros()
    );
    let due = col(&issues, "due_date")
        .as_primitive::<Date32Type>()
        .value(0);
    assert_eq!(
        due,
        (NaiveDate::from_ymd_opt(2024, 3, 10).unwrap() - NaiveDate::default()).num_days() as i32
    );

    let changelog = rows.batch("changelog").unwrap();
    assert_eq!(changelog.num_rows(), 2);
    assert_eq!(
        col(&changelog, "to_value").as_string::<i32>().value(0),
        "In Progress"
    );
    assert_eq!(
        col(&changelog, "from_value").as_string::<i32>().value(1),
        ""
    );
    let links = rows.batch("issuelinks").unwrap();
    let dirs: Vec<&str> = col(&links, "direction")
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(dirs, ["outward", "inward"]);
    let remote = rows.batch("remote_links").unwrap();
    assert_eq!(
        col(&remote, "remote_link_id").as_string::<i32>().value(0),
        "60001"
    );
    let attachments = rows.batch("attachments").unwrap();
    assert_eq!(
        col(&attachments, "local_path").as_string::<i32>().value(0),
        "raw/jira/attachments/SUP-7/20001"
    );
    let comments = rows.batch("comments").unwrap();
    assert_eq!(col(&comments, "body").as_string::<i32>().value(0), "plain");
}

#[test]
fn sla_fields_of_the_sla_account_win() {
    let mut b = bundle();
    b.sla = Some(
        json!({"customfield_10161": {"ongoingCycle": {"breached": true, "goalDuration": {"millis": 1}, "elapsedTime": {"millis": 2}}}}),
    );
    let fields = JiraFields::default();
    let ctx = RowContext {
        site: "https://x",
        fields: &fields,
        synced_at_us: 1,
        raw_file: "r",
    };
    let mut rows = TableRows::default();
    rows.add(&b, &ctx);
    let issues = rows.batch("issues").unwrap();
    assert!(
        col(&issues, "first_response_breached")
            .as_boolean()
            .value(0)
    );
    assert!(col(&issues, "time_to_resolution_goal_millis").is_null(0));
}

#[test]
fn every_table_has_its_schema_even_when_empty() {
    let rows = TableRows::default();
    for t in TABLES {
        let batch = rows.batch(t).unwrap();
        assert_eq!(batch.num_rows(), 0);
        assert!(batch.schema().field_with_name("issue_key").is_ok(), "{t}");
    }
}
