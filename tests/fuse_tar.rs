//! A project's BigQuery and Pub/Sub configuration exported with `tar c`
//! through a FUSE mount and extracted with `tar x` into another project of
//! the same mount: the copy is checked resource by resource with curl on the
//! emulators' REST APIs (a client that is not ciofs). Bucket names are
//! global, so the bucket is renamed on the way (`tar --transform`), as a
//! user migrating a project does.

mod common;

use common::*;
use serde_json::{Value, json};

fn bq(project: &str, path: &str) -> Value {
    let url = bq_url().replace(&format!("/projects/{PROJECT}"), &format!("/projects/{project}"));
    get_json(&format!("{url}{path}")).unwrap_or_else(|| panic!("{project}{path} does not exist"))
}

fn ps(project: &str, path: &str) -> Value {
    let url = pubsub_url().replace(&format!("/projects/{PROJECT}"), &format!("/projects/{project}"));
    get_json(&format!("{url}{path}")).unwrap_or_else(|| panic!("{project}{path} does not exist"))
}

fn post(url: &str, body: Value) {
    curl(&["-X", "POST", "-H", "content-type: application/json", url, "-d", &body.to_string()]);
}

fn put(url: &str, body: Value) {
    curl(&["-X", "PUT", "-H", "content-type: application/json", url, "-d", &body.to_string()]);
}

#[test]
fn tar_c_of_bigquery_and_pubsub_then_tar_x_into_another_project_recreates_them() {
    let target = format!("import-{}", std::process::id());
    // Source: a dataset with a nested-schema table, a topic with two
    // subscriptions, one with a filter and a dead-letter policy. The
    // dead-letter topic sorts first: the archive must bring it before the
    // subscription that names it.
    let dataset = dataset_name("tar_src");
    post(
        &format!("{}/datasets", bq_url()),
        json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}, "description": "sales", "labels": {"team": "data"}}),
    );
    let schema = json!({"fields": [
        {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
        {"name": "customer", "type": "RECORD", "fields": [{"name": "name", "type": "STRING"}, {"name": "tags", "type": "STRING", "mode": "REPEATED"}]}
    ]});
    post(
        &format!("{}/datasets/{dataset}/tables", bq_url()),
        json!({"tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": "orders"},
               "schema": schema, "description": "one row per order", "labels": {"env": "prod"}}),
    );
    let prefix = pubsub_name("tar");
    let (dead, main) = (format!("{prefix}-a-dead"), format!("{prefix}-b-main"));
    put(&format!("{}/topics/{dead}", pubsub_url()), json!({}));
    put(&format!("{}/topics/{main}", pubsub_url()), json!({}));
    put(
        &format!("{}/subscriptions/{main}-plain", pubsub_url()),
        json!({"topic": format!("projects/{PROJECT}/topics/{main}"), "ackDeadlineSeconds": 30}),
    );
    put(
        &format!("{}/subscriptions/{main}-filtered", pubsub_url()),
        json!({"topic": format!("projects/{PROJECT}/topics/{main}"), "filter": "attributes.kind = \"order\"",
               "deadLetterPolicy": {"deadLetterTopic": format!("projects/{PROJECT}/topics/{dead}"), "maxDeliveryAttempts": 7}}),
    );

    let (bucket, copied) = (format!("{prefix}-src"), format!("{prefix}-dst"));
    post(&format!("{}/storage/v1/b?project={PROJECT}", gcs_url()), json!({"name": bucket}));
    let object = json!({"name": "dir/a.csv", "contentType": "text/csv", "metadata": {"owner": "sales"}});
    let boundary = "ciofs-tar-test";
    let body = format!(
        "--{boundary}\r\ncontent-type: application/json\r\n\r\n{object}\r\n--{boundary}\r\ncontent-type: text/csv\r\n\r\nid,total\n1,9\n\r\n--{boundary}--"
    );
    curl(&[
        "-X",
        "POST",
        "-H",
        &format!("content-type: multipart/related; boundary={boundary}"),
        &format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=multipart", gcs_url()),
        "--data-binary",
        &body,
    ]);

    let mount = FuseMount::start(&["--project", &target]);
    let root = mount.path("").display().to_string();
    let archive = tempfile::tempdir().unwrap();
    let archive = archive.path().join("p.tar").display().to_string();
    let members = format!("storage/{bucket} bigquery/{dataset} pubsub/topics/{dead} pubsub/topics/{main}");
    ok(&format!("tar cf {archive} -C {root}/{PROJECT} {members}"));
    let listing = ok(&format!("tar tf {archive}"));
    assert!(listing.contains(&format!("bigquery/{dataset}/orders/schema.json")), "{listing}");
    // Twice: the second finds everything there and changes nothing.
    for _ in 0..2 {
        let rename = format!("--transform 's,^storage/{bucket},storage/{copied},'");
        ok(&format!("timeout 120 tar xf {archive} {rename} -C {root}/{target}"));
    }

    let url = format!("{}/storage/v1/b/{copied}/o/dir%2Fa.csv", gcs_url());
    let object = get_json(&url).expect("the object was copied");
    assert_eq!((&object["contentType"], &object["metadata"]), (&json!("text/csv"), &json!({"owner": "sales"})));
    assert_eq!(curl(&[&format!("{url}?alt=media")]), b"id,total\n1,9\n");

    let copy = bq(&target, &format!("/datasets/{dataset}"));
    assert_eq!((&copy["description"], &copy["labels"]), (&json!("sales"), &json!({"team": "data"})));
    let table = bq(&target, &format!("/datasets/{dataset}/tables/orders"));
    let source = bq(PROJECT, &format!("/datasets/{dataset}/tables/orders"));
    assert_eq!(table["schema"], source["schema"]);
    assert_eq!((&table["description"], &table["labels"]), (&source["description"], &source["labels"]));
    ps(&target, &format!("/topics/{dead}"));
    ps(&target, &format!("/topics/{main}"));
    let plain = ps(&target, &format!("/subscriptions/{main}-plain"));
    assert_eq!(
        (&plain["topic"], &plain["ackDeadlineSeconds"]),
        (&json!(format!("projects/{target}/topics/{main}")), &json!(30))
    );
    let filtered = ps(&target, &format!("/subscriptions/{main}-filtered"));
    assert_eq!(filtered["filter"], "attributes.kind = \"order\"");
    let policy = &filtered["deadLetterPolicy"];
    assert_eq!(
        policy["deadLetterTopic"],
        format!("projects/{target}/topics/{dead}"),
        "rewritten to the target project"
    );
    assert_eq!(policy["maxDeliveryAttempts"], 7);

    // The second extraction changed nothing, and nothing was published.
    let again = bq(&target, &format!("/datasets/{dataset}/tables/orders"));
    assert_eq!(again["etag"], table["etag"]);
    assert!(
        ps_pull_from(
            &pubsub_url().replace(PROJECT, &target),
            &format!("{main}-plain"),
            1,
            std::time::Duration::from_secs(1)
        )
        .is_empty()
    );
    let errors = std::fs::read_to_string(mount.path(".ciofs/errors")).unwrap();
    assert!(!errors.contains(&target), "{errors}");
}
