use serde_json::json;

use super::issues::newer;
use super::queue::issue_refs;
use super::*;

#[test]
fn deliveries_name_their_issues_by_checked_keys_and_ids() {
    let (key, items) = issue_refs(
        "jira:issue_updated",
        &json!({"issue": {"id": "10001", "key": "SUP-1"}}),
    )
    .unwrap();
    assert_eq!(
        (key.as_deref(), items),
        (Some("SUP-1"), vec!["SUP-1".to_string()])
    );

    let link =
        json!({"issueLink": {"id": 5, "sourceIssueId": 10001, "destinationIssueId": "10002"}});
    let (key, items) = issue_refs("issuelink_created", &link).unwrap();
    assert_eq!(
        (key, items),
        (None, vec!["10001".to_string(), "10002".to_string()])
    );

    let (_, items) = issue_refs("user_created", &json!({"user": {}})).unwrap();
    assert!(
        items.is_empty(),
        "events without an issue are accepted and ignored"
    );

    for bad in [
        json!({"issue": {"key": "../SUP-1"}}),
        json!({"issue": {"key": "SUP-1/../../etc"}}),
        json!({"issue": {"key": 7}}),
        json!({"issue": {"id": "../1"}}),
    ] {
        assert!(
            matches!(
                issue_refs("jira:issue_updated", &bad),
                Err(Rejection::Invalid(_))
            ),
            "{bad}"
        );
    }
    assert!(issue_refs("jira:issue_deleted", &json!({"issue": {"id": "1"}})).is_err());
}

#[test]
fn a_later_version_is_never_replaced_by_an_earlier_one() {
    assert!(newer(
        Some("2024-03-05T10:00:00.000+0000"),
        Some("2024-03-05T10:30:00.000+0100")
    ));
    assert!(!newer(
        Some("2024-03-05T10:00:00.000+0000"),
        Some("2024-03-05T10:00:00.000+0000")
    ));
    assert!(!newer(None, Some("2024-03-05T10:00:00.000+0000")));
}

#[test]
fn batch_reports_summarise_and_cap_their_errors() {
    let mut r = BatchReport::default();
    assert_eq!(r.error(), None);
    r.failed = (0..25)
        .map(|i| (format!("SUP-{i}"), "HTTP 500".to_string()))
        .collect();
    let e = r.error().unwrap();
    assert!(e.starts_with("SUP-0: HTTP 500; "), "{e}");
    assert!(e.ends_with("(and 5 more)"), "{e}");
}
