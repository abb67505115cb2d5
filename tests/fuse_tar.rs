//! A project's BigQuery and Pub/Sub configuration exported with `tar c`
//! through a FUSE mount and extracted with `tar x` into another project of
//! the same mount: the copy is checked resource by resource with curl on the
//! emulators' REST APIs (a client that is not ciofs). Bucket names are
//! global, so the bucket is renamed on the way (`tar --transform`), as a
//! user migrating a project does.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn bq(project: &str, path: &str) -> Value {
    let url = bq_url_of(project);
    get_json(&format!("{url}{path}")).unwrap_or_else(|| panic!("{project}{path} does not exist"))
}

fn ps(project: &str, path: &str) -> Value {
    let url = pubsub_url_of(project);
    get_json(&format!("{url}{path}")).unwrap_or_else(|| panic!("{project}{path} does not exist"))
}

#[test]
fn tar_c_of_bigquery_and_pubsub_then_tar_x_into_another_project_recreates_them() {
    let target = format!("import-{}", std::process::id());
    // Source: a dataset with a nested-schema table, a topic with two
    // subscriptions, one with a filter and a dead-letter policy. The
    // dead-letter topic sorts last: the subscription naming it comes first
    // in the archive and waits for it.
    let dataset = dataset_name("tar_src");
    post_json(
        &format!("{}/datasets", bq_url()),
        json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}, "location": "EU", "description": "sales", "labels": {"team": "data"}}),
    );
    let schema = json!({"fields": [
        {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
        {"name": "customer", "type": "RECORD", "fields": [{"name": "name", "type": "STRING"}, {"name": "tags", "type": "STRING", "mode": "REPEATED"}]}
    ]});
    post_json(
        &format!("{}/datasets/{dataset}/tables", bq_url()),
        json!({"tableReference": {"projectId": PROJECT, "datasetId": dataset, "tableId": "orders"},
               "schema": schema, "description": "one row per order", "labels": {"env": "prod"}}),
    );
    let prefix = pubsub_name("tar");
    let (dead, main) = (format!("{prefix}-z-dead"), format!("{prefix}-b-main"));
    put_json(&format!("{}/topics/{dead}", pubsub_url()), json!({}));
    put_json(&format!("{}/topics/{main}", pubsub_url()), json!({}));
    put_json(
        &format!("{}/subscriptions/{main}-plain", pubsub_url()),
        json!({"topic": format!("projects/{PROJECT}/topics/{main}"), "ackDeadlineSeconds": 30}),
    );
    put_json(
        &format!("{}/subscriptions/{main}-filtered", pubsub_url()),
        json!({"topic": format!("projects/{PROJECT}/topics/{main}"), "filter": "attributes.kind = \"order\"",
               "deadLetterPolicy": {"deadLetterTopic": format!("projects/{PROJECT}/topics/{dead}"), "maxDeliveryAttempts": 7},
               "retryPolicy": {"minimumBackoff": "5s", "maximumBackoff": "300s"}}),
    );

    let (bucket, copied) = (format!("{prefix}-src"), format!("{prefix}-dst"));
    // Versioned: of a bucket's settings, fake-gcs-server keeps only that.
    let versioned = json!({"name": bucket, "versioning": {"enabled": true}});
    post_json(&format!("{}/storage/v1/b?project={PROJECT}", gcs_url()), versioned);
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

    let made = get_json(&format!("{}/storage/v1/b/{copied}", gcs_url())).expect("the bucket was made");
    assert_eq!(made["versioning"]["enabled"], json!(true), "made with its settings: {made}");
    let url = format!("{}/storage/v1/b/{copied}/o/dir%2Fa.csv", gcs_url());
    let object = get_json(&url).expect("the object was copied");
    assert_eq!((&object["contentType"], &object["metadata"]), (&json!("text/csv"), &json!({"owner": "sales"})));
    assert_eq!(curl(&[&format!("{url}?alt=media")]), b"id,total\n1,9\n");

    let copy = bq(&target, &format!("/datasets/{dataset}"));
    assert_eq!((&copy["description"], &copy["labels"]), (&json!("sales"), &json!({"team": "data"})));
    assert_eq!(copy["location"], json!("EU"), "made in its location: {copy}");
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
    let path = format!("/subscriptions/{main}-filtered").replace(PROJECT, &target);
    let url = pubsub_url_of(&target);
    wait_until("the filtered subscription is created", std::time::Duration::from_secs(10), || {
        get_json(&format!("{url}{path}")).is_some()
    });
    let filtered = ps(&target, &format!("/subscriptions/{main}-filtered"));
    assert_eq!(filtered["filter"], "attributes.kind = \"order\"");
    let policy = &filtered["deadLetterPolicy"];
    assert_eq!(
        policy["deadLetterTopic"],
        format!("projects/{target}/topics/{dead}"),
        "rewritten to the target project"
    );
    assert_eq!(policy["maxDeliveryAttempts"], 7);
    let retry = &filtered["retryPolicy"];
    assert_eq!((&retry["minimumBackoff"], &retry["maximumBackoff"]), (&json!("5s"), &json!("300s")), "{filtered}");

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

/// `ciofs export` without a mount: the same tree as `tar c` of the mount
/// (paths, modes, times, contents), byte-identical twice, gzip when asked;
/// its archive extracts into another project through the mount. A private
/// Cloud Storage emulator keeps other tests' buckets (names are global) out
/// of the project's tree, so the two archives can be compared whole.
#[test]
fn ciofs_export_matches_tar_c_of_the_mount_and_is_deterministic() {
    let gcs = PrivateGcs::start();
    let source = format!("export-{}", std::process::id());
    let target = format!("exported-{}", std::process::id());
    let bq_source = bq_url_of(&source);
    let ps_source = pubsub_url_of(&source);
    post_json(
        &format!("{bq_source}/datasets"),
        json!({"datasetReference": {"projectId": source, "datasetId": "sales"}, "description": "d"}),
    );
    post_json(
        &format!("{bq_source}/datasets/sales/tables"),
        json!({"tableReference": {"projectId": source, "datasetId": "sales", "tableId": "orders"},
               "schema": {"fields": [{"name": "id", "type": "INTEGER"}]}}),
    );
    put_json(&format!("{ps_source}/topics/events"), json!({}));
    put_json(
        &format!("{ps_source}/subscriptions/events-sub"),
        json!({"topic": format!("projects/{source}/topics/events")}),
    );
    let bucket = format!("export-src-{}", std::process::id());
    post_json(&format!("{}/storage/v1/b?project={source}", gcs.url()), json!({"name": bucket}));
    for (name, data) in [("a.txt", "alpha\n"), ("dir/b.bin", "beta")] {
        let url = format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}", gcs.url(), encode(name));
        curl(&["-X", "POST", &url, "--data-binary", data]);
    }

    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let export = |file: &str, extra: &[&str]| {
        let output = ciofs()
            .args(["export", "--project", &source, &format!("{w}/{file}")])
            .args(extra)
            .env("STORAGE_EMULATOR_HOST", gcs.url())
            .env("CIOFS_STATE_DIR", format!("{w}/state"))
            .output()
            .expect("ciofs export runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let said = export("one.tar", &[]);
    assert!(said.contains("exported") && said.contains("files"), "{said}");
    export("two.tar", &[]);
    export("three.tar.gz", &[]);
    // Configuration only: the objects' documents, not the objects.
    export("config.tar", &["--config-only"]);
    let config = ok(&format!("tar tf {w}/config.tar"));
    assert!(config.contains(&format!("{source}/storage/{bucket}/dir/.meta/b.bin.json")), "{config}");
    assert!(!config.contains(&format!("{source}/storage/{bucket}/dir/b.bin\n")), "{config}");
    assert!(config.contains(&format!("{source}/bigquery/sales/orders/schema.json")), "{config}");
    assert_eq!(ok(&format!("sha256sum < {w}/one.tar")), ok(&format!("sha256sum < {w}/two.tar")), "deterministic");
    assert_eq!(ok(&format!("gunzip -c {w}/three.tar.gz | sha256sum")), ok(&format!("sha256sum < {w}/one.tar")));
    assert!(!std::path::Path::new(&format!("{w}/one.partial")).exists());

    let gcs_host = gcs.url();
    let mount = FuseMount::start_with_env(
        &["--project", &source, "--project", &target],
        &[("STORAGE_EMULATOR_HOST", &gcs_host)],
    );
    let root = mount.path("").display().to_string();
    ok(&format!("tar cf {w}/mount.tar -C {root} {source}"));
    assert_eq!(
        ok(&format!("tar tvf {w}/one.tar")),
        ok(&format!("tar tvf {w}/mount.tar")),
        "same entries, modes, times"
    );
    ok(&format!(
        "mkdir {w}/x {w}/y && tar xf {w}/one.tar -C {w}/x && tar xf {w}/mount.tar -C {w}/y && diff -r {w}/x {w}/y"
    ));
    // A --config-only mount: `tar c` of it is `ciofs export --config-only`.
    let config_mount =
        FuseMount::start_with_env(&["--project", &source, "--config-only"], &[("STORAGE_EMULATOR_HOST", &gcs_host)]);
    let config_root = config_mount.path("").display().to_string();
    ok(&format!("tar cf {w}/mount-config.tar -C {config_root} {source}"));
    assert_eq!(ok(&format!("tar tvf {w}/config.tar")), ok(&format!("tar tvf {w}/mount-config.tar")));
    ok(&format!(
        "mkdir {w}/cx {w}/cy && tar xf {w}/config.tar -C {w}/cx && tar xf {w}/mount-config.tar -C {w}/cy && diff -r {w}/cx {w}/cy"
    ));
    let refused = sh(&format!("/bin/echo x > {config_root}/{source}/storage/{bucket}/new.txt"));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Read-only"), "{refused:?}");
    drop(config_mount);
    assert!(
        ok(&format!("tar tf {w}/one.tar"))
            .contains(&format!("{source}/pubsub/topics/events/subscriptions/events-sub/_stream"))
    );

    // The other way across: `tar c` of the mount, imported by `ciofs import`.
    let imported = format!("viaimport-{}", std::process::id());
    let moved = format!("export-imp-{}", std::process::id());
    let output = ciofs()
        .args([
            "import",
            "--project",
            &imported,
            "--map-bucket",
            &format!("{bucket}={moved}"),
            &format!("{w}/mount.tar"),
        ])
        .env("STORAGE_EMULATOR_HOST", gcs.url())
        .env("CIOFS_STATE_DIR", format!("{w}/state"))
        .output()
        .expect("ciofs import runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(curl(&[&format!("{}/storage/v1/b/{moved}/o/a.txt?alt=media", gcs.url())]), b"alpha\n");
    assert_eq!(bq(&imported, "/datasets/sales/tables/orders")["schema"]["fields"][0]["name"], "id");
    assert_eq!(ps(&imported, "/subscriptions/events-sub")["topic"], format!("projects/{imported}/topics/events"));

    // The export, extracted through the mount into another project.
    let copied = format!("export-dst-{}", std::process::id());
    // GNU tar matches --transform against the name before stripping.
    let rename = format!("--transform 's,^{source}/storage/{bucket},{source}/storage/{copied},'");
    ok(&format!("timeout 120 tar xf {w}/one.tar --strip-components=1 {rename} -C {root}/{target}"));
    assert_eq!(curl(&[&format!("{}/storage/v1/b/{copied}/o/dir%2Fb.bin?alt=media", gcs.url())]), b"beta");
    let table = bq(&target, "/datasets/sales/tables/orders");
    assert_eq!(table["schema"]["fields"][0]["name"], "id");
    assert_eq!(ps(&target, "/subscriptions/events-sub")["topic"], format!("projects/{target}/topics/events"));
}

/// `ciofs import`: a dry run changes nothing; the import recreates the
/// resources (a bucket mapped to a new name); a second import finds all
/// unchanged and writes nothing; an archive made by `tar c` of the mount
/// imports the same way; bad entries are reported, never applied.
#[test]
fn ciofs_import_plans_applies_and_is_idempotent() {
    let gcs = PrivateGcs::start();
    let pid = std::process::id();
    let (source, target) = (format!("imsrc-{pid}"), format!("imdst-{pid}"));
    let bq_of = bq_url_of;
    let ps_of = pubsub_url_of;
    post_json(
        &format!("{}/datasets", bq_of(&source)),
        json!({"datasetReference": {"projectId": source, "datasetId": "ds"}, "description": "d"}),
    );
    post_json(
        &format!("{}/datasets/ds/tables", bq_of(&source)),
        json!({"tableReference": {"projectId": source, "datasetId": "ds", "tableId": "t"},
               "schema": {"fields": [{"name": "id", "type": "INTEGER"}]}, "labels": {"env": "prod"}}),
    );
    put_json(&format!("{}/topics/events", ps_of(&source)), json!({}));
    put_json(
        &format!("{}/subscriptions/events-sub", ps_of(&source)),
        json!({"topic": format!("projects/{source}/topics/events"), "ackDeadlineSeconds": 25}),
    );
    let bucket = format!("import-src-{pid}");
    post_json(&format!("{}/storage/v1/b?project={source}", gcs.url()), json!({"name": bucket}));
    curl(&[
        "-X",
        "POST",
        &format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=a.txt", gcs.url()),
        "--data-binary",
        "alpha",
    ]);

    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let run = |args: &[&str]| {
        let output = ciofs()
            .args(args)
            .env("STORAGE_EMULATOR_HOST", gcs.url())
            .env("CIOFS_STATE_DIR", format!("{w}/state"))
            .output()
            .expect("ciofs runs");
        let text = output_text(&output);
        (output.status.success(), text)
    };
    let (exported, said) = run(&["export", "--project", &source, &format!("{w}/p.tar")]);
    assert!(exported, "{said}");
    let copied = format!("import-dst-{pid}");
    let mapping = format!("{bucket}={copied}");
    let import = |extra: &[&str]| {
        let mut args = vec!["import", "--project", &target, "--map-bucket", &mapping];
        args.extend_from_slice(extra);
        let file = format!("{w}/p.tar");
        args.push(&file);
        run(&args)
    };

    let (ok_dry, plan) = import(&["--dry-run"]);
    assert!(ok_dry, "{plan}");
    assert!(plan.contains(&format!("create    storage/{copied}/a.txt")), "{plan}");
    assert!(plan.contains(&format!("create    storage/{copied}/.meta/_bucket.json")), "{plan}");
    assert!(plan.contains("create    bigquery/ds/t/schema.json"), "{plan}");
    assert!(get_json(&format!("{}/datasets/ds", bq_of(&target))).is_none(), "a dry run changes nothing");

    let (imported, said) = import(&[]);
    assert!(imported, "{said}");
    assert_eq!(curl(&[&format!("{}/storage/v1/b/{copied}/o/a.txt?alt=media", gcs.url())]), b"alpha");
    let table = get_json(&format!("{}/datasets/ds/tables/t", bq_of(&target))).expect("the table");
    assert_eq!((&table["labels"], &table["schema"]["fields"][0]["name"]), (&json!({"env": "prod"}), &json!("id")));
    let sub = get_json(&format!("{}/subscriptions/events-sub", ps_of(&target))).expect("the subscription");
    assert_eq!(
        (&sub["ackDeadlineSeconds"], &sub["topic"]),
        (&json!(25), &json!(format!("projects/{target}/topics/events")))
    );

    // Again: everything unchanged, and no write call to any service (what
    // ciofs sends goes through recording proxies).
    let emulator = |variable: &str| {
        let host = std::env::var(variable).unwrap_or_else(|_| panic!("{variable} is not set"));
        common::proxy::RecordingProxy::start(&host)
    };
    let proxies = [
        ("STORAGE_EMULATOR_HOST", common::proxy::RecordingProxy::start(&gcs.url())),
        ("BIGQUERY_EMULATOR_HOST", emulator("BIGQUERY_EMULATOR_HOST")),
        ("PUBSUB_EMULATOR_HOST", emulator("PUBSUB_EMULATOR_HOST")),
    ];
    let output = ciofs()
        .args(["import", "--project", &target, "--map-bucket", &mapping, &format!("{w}/p.tar")])
        .env("CIOFS_STATE_DIR", format!("{w}/state"))
        .envs(proxies.iter().map(|(name, proxy)| (*name, proxy.url())))
        .output()
        .expect("ciofs import runs");
    let plan = output_text(&output);
    assert!(output.status.success(), "{plan}");
    assert!(plan.contains("0 to create, 0 to update"), "{plan}");
    assert!(!plan.contains("create ") && !plan.contains("update "), "{plan}");
    for (service, proxy) in &proxies {
        let sent = proxy.sent();
        assert!(sent.contains("GET "), "{service}: the import read nothing through the proxy");
        for write in ["POST ", "PUT ", "PATCH ", "DELETE "] {
            let calls: Vec<&str> = sent.lines().filter(|line| line.starts_with(write)).collect();
            assert!(calls.is_empty(), "{service}: a second import sent {calls:?}");
        }
    }
    let after = get_json(&format!("{}/datasets/ds/tables/t", bq_of(&target))).unwrap();
    assert_eq!(after["etag"], table["etag"]);

    // A change in the target shows as an update with its field.
    put_json(
        &format!("{}/datasets/ds/tables/t", bq_of(&target)),
        json!({"tableReference": {"projectId": target, "datasetId": "ds", "tableId": "t"}, "schema": {"fields": [{"name": "id", "type": "INTEGER"}]}, "labels": {"env": "dev"}}),
    );
    let (_, plan) = import(&["--dry-run"]);
    assert!(plan.contains("update    bigquery/ds/t/config.json") && plan.contains("labels"), "{plan}");

    // An existing bucket takes nothing: a differing object is a conflict.
    curl(&[
        "-X",
        "POST",
        &format!("{}/upload/storage/v1/b/{copied}/o?uploadType=media&name=a.txt", gcs.url()),
        "--data-binary",
        "changed",
    ]);
    let (conflicted, plan) = import(&[]);
    assert!(!conflicted, "{plan}");
    assert!(plan.contains(&format!("conflict  storage/{copied}  bucket {copied} exists")), "{plan}");
    assert!(
        plan.contains(&format!("conflict  storage/{copied}/a.txt  the object exists with other content")),
        "{plan}"
    );
    assert_eq!(curl(&[&format!("{}/storage/v1/b/{copied}/o/a.txt?alt=media", gcs.url())]), b"changed", "skipped");

    // With --on-conflict fail, a conflict stops everything: the label
    // update that would go with it is not applied either.
    put_json(
        &format!("{}/datasets/ds/tables/t", bq_of(&target)),
        json!({"tableReference": {"projectId": target, "datasetId": "ds", "tableId": "t"}, "schema": {"fields": [{"name": "id", "type": "INTEGER"}]}, "labels": {"env": "dev"}}),
    );
    let (failed, plan) = import(&["--on-conflict", "fail"]);
    assert!(!failed && plan.contains("nothing applied"), "{plan}");
    let labels = &get_json(&format!("{}/datasets/ds/tables/t", bq_of(&target))).unwrap()["labels"];
    assert_eq!(labels, &json!({"env": "dev"}));

    // Bad entries: reported with their reason, the rest applied, exit non-zero.
    let bad = format!("{w}/bad");
    ok(&format!(
        "mkdir -p {bad}/p/bigquery/ds/t2 {bad}/p/bigquery/ds/t3 {bad}/p/secrets && echo '{{nope' > {bad}/p/bigquery/ds/t2/schema.json && \
         echo '{{\"fields\": [{{\"name\": \"x\", \"type\": \"NOT_A_TYPE\"}}]}}' > {bad}/p/bigquery/ds/t3/schema.json && \
         echo x > {bad}/p/secrets/key && ln -s /etc/passwd {bad}/p/bigquery/ds/link && \
         tar cf {w}/bad.tar -C {bad} p && tar rf {w}/bad.tar --absolute-names /etc/hostname"
    ));
    let (bad_ok, plan) = run(&["import", "--project", &target, &format!("{w}/bad.tar")]);
    assert!(!bad_ok, "{plan}");
    assert!(plan.contains("invalid   bigquery/ds/t2/schema.json  not valid JSON"), "{plan}");
    assert!(plan.contains("invalid   bigquery/ds/t3/schema.json") && plan.contains("NOT_A_TYPE"), "{plan}");
    assert!(plan.contains("unknown top-level directory \"secrets\""), "{plan}");
    assert!(plan.contains("only directories and regular files"), "{plan}");
    assert!(plan.contains("absolute path"), "{plan}");

    // A hand-made archive of bare directories: the dataset and the bucket
    // have no settings to wait for, and are made before the import ends.
    let hand_bucket = format!("hand-{pid}");
    ok(&format!(
        "mkdir -p {w}/hand/p/bigquery/hand_ds {w}/hand/p/storage/{hand_bucket} && tar cf {w}/hand.tar -C {w}/hand p"
    ));
    let (hand_ok, plan) = run(&["import", "--project", &target, &format!("{w}/hand.tar")]);
    assert!(hand_ok, "{plan}");
    assert!(get_json(&format!("{}/datasets/hand_ds", bq_of(&target))).is_some(), "{plan}");
    assert!(get_json(&format!("{}/storage/v1/b/{hand_bucket}", gcs.url())).is_some(), "{plan}");
}

/// An archive is read twice, never held: importing one that holds a 96 MiB
/// object peaks far below its size (the process's peak resident memory,
/// read with getrusage by a Python parent), and a second import finds the
/// object unchanged by its hashes.
#[test]
fn ciofs_import_of_a_large_object_holds_little_memory() {
    let gcs = PrivateGcs::start();
    let pid = std::process::id();
    let (source, target) = (format!("bigsrc-{pid}"), format!("bigdst-{pid}"));
    let (bucket, copied) = (format!("big-src-{pid}"), format!("big-dst-{pid}"));
    post_json(&format!("{}/storage/v1/b?project={source}", gcs.url()), json!({"name": bucket}));
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let data = pattern(96 << 20, 3);
    std::fs::write(format!("{w}/big.bin"), &data).unwrap();
    curl(&[
        "-X",
        "POST",
        "-T",
        &format!("{w}/big.bin"),
        &format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=big.bin", gcs.url()),
    ]);
    let peak_mib = |args: &[&str]| {
        let script = "import resource, subprocess, sys\n\
                      done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n\
                      print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n\
                      print(done.returncode, done.stdout, done.stderr)";
        let output = Command::new("python3")
            .args(["-c", script])
            .arg(env!("CARGO_BIN_EXE_ciofs"))
            .args(args)
            .env("STORAGE_EMULATOR_HOST", gcs.url())
            .env("CIOFS_STATE_DIR", format!("{w}/state"))
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (peak, said) = text.split_once('\n').unwrap_or_default();
        assert!(said.starts_with("0 "), "ciofs {args:?} failed: {said}");
        (peak.trim().parse::<u64>().expect("peak"), said.to_string())
    };
    let archive = format!("{w}/big.tar");
    let (_, _) = peak_mib(&["export", "--project", &source, &archive]);
    let mapping = format!("{bucket}={copied}");
    let import = ["import", "--project", &target, "--map-bucket", &mapping, &archive];
    let (peak, said) = peak_mib(&import);
    assert!(peak < 64, "ciofs import of a 96 MiB object peaked at {peak} MiB: {said}");
    let copy = get_json(&format!("{}/storage/v1/b/{copied}/o/big.bin", gcs.url())).expect("the object was imported");
    let source_object = get_json(&format!("{}/storage/v1/b/{bucket}/o/big.bin", gcs.url())).unwrap();
    assert_eq!((&copy["size"], &copy["md5Hash"]), (&source_object["size"], &source_object["md5Hash"]));
    let (_, again) = peak_mib(&import);
    assert!(again.contains(&format!("unchanged storage/{copied}/big.bin")), "{again}");
}

/// Every regular file under `root`, by path relative to it.
fn files_under(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The fields of a document that differ between a project's export and the
/// export of its copy, and why: nothing else may.
fn fields_that_must_differ(document_type: &str) -> &'static [&'static str] {
    match document_type {
        // A new bucket: its name (names are global, so the copy is renamed)
        // and its own times.
        "gcs-bucket-metadata" => &["name", "created", "updated"],
        // A new object of the renamed bucket, with its own times and
        // generation. Its bytes, hashes, content type, metadata and
        // metageneration are the source's.
        "gcs-object-metadata" => &["bucket", "created", "updated", "generation"],
        // A new dataset and a new table: their own times and etags.
        "bigquery-dataset-metadata" | "bigquery-table-config" | "bigquery-table-status" => {
            &["created", "modified", "etag"]
        }
        // The project it describes.
        "pubsub-quotas" => &["project"],
        _ => &[],
    }
}

/// Export, `tar x` into another project's mount, export again: the two
/// exports hold the same files, and each document the same fields, but for
/// those `fields_that_must_differ` names. Buckets, objects, a dataset, a
/// table, topics with labels and retention, subscriptions with every
/// setting. A private Cloud Storage emulator keeps the tree to this test's
/// bucket. Where an emulator keeps less than Google would (fake-gcs-server:
/// bucket labels and storage class), the archive is given them and what
/// ciofs sent is checked through a recording proxy.
#[test]
fn every_field_of_every_document_survives_export_tar_x_and_export_again() {
    let gcs = PrivateGcs::start();
    let pid = std::process::id();
    let (source, target) = (format!("rtsrc-{pid}"), format!("rtdst-{pid}"));
    let (bucket, copied) = (format!("rt-src-{pid}"), format!("rt-dst-{pid}"));
    let (bq_source, ps_source) = (bq_url_of(&source), pubsub_url_of(&source));
    // Versioning is left out: this emulator's filesystem backend refuses it
    // (the test above has it, on the shared one).
    post_json(&format!("{}/storage/v1/b?project={source}", gcs.url()), json!({"name": bucket}));
    let object = json!({"name": "dir/a.csv", "contentType": "text/csv", "metadata": {"owner": "sales"}});
    let body = format!(
        "--b\r\ncontent-type: application/json\r\n\r\n{object}\r\n--b\r\ncontent-type: text/csv\r\n\r\nid\n1\n\r\n--b--"
    );
    let upload = format!("{}/upload/storage/v1/b/{bucket}/o?uploadType=multipart", gcs.url());
    curl(&["-X", "POST", "-H", "content-type: multipart/related; boundary=b", &upload, "--data-binary", &body]);
    post_json(
        &format!("{bq_source}/datasets"),
        json!({"datasetReference": {"projectId": source, "datasetId": "sales"}, "location": "EU",
               "description": "sales data", "friendlyName": "Sales", "labels": {"team": "data"},
               "defaultTableExpirationMs": "86400000"}),
    );
    post_json(
        &format!("{bq_source}/datasets/sales/tables"),
        json!({"tableReference": {"projectId": source, "datasetId": "sales", "tableId": "orders"},
               "schema": {"fields": [
                   {"name": "id", "type": "INTEGER", "mode": "REQUIRED", "description": "the order"},
                   {"name": "customer", "type": "RECORD", "fields": [
                       {"name": "name", "type": "STRING"}, {"name": "tags", "type": "STRING", "mode": "REPEATED"}]}]},
               "description": "one row per order", "friendlyName": "Orders", "labels": {"env": "prod"}}),
    );
    put_json(&format!("{ps_source}/topics/dead"), json!({}));
    put_json(
        &format!("{ps_source}/topics/events"),
        json!({"labels": {"team": "data", "env": "prod"}, "messageRetentionDuration": "3600s"}),
    );
    put_json(
        &format!("{ps_source}/subscriptions/events-all"),
        json!({"topic": format!("projects/{source}/topics/events"), "ackDeadlineSeconds": 30,
               "retainAckedMessages": true, "messageRetentionDuration": "7200s", "enableMessageOrdering": true,
               "labels": {"owner": "ops"}}),
    );
    put_json(
        &format!("{ps_source}/subscriptions/events-orders"),
        json!({"topic": format!("projects/{source}/topics/events"), "filter": "attributes.kind = \"order\"",
               "deadLetterPolicy": {"deadLetterTopic": format!("projects/{source}/topics/dead"), "maxDeliveryAttempts": 7},
               "retryPolicy": {"minimumBackoff": "5s", "maximumBackoff": "300s"}}),
    );

    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let export = |project: &str, file: &str| {
        let output = ciofs()
            .args(["export", "--project", project, &format!("{w}/{file}")])
            .env("STORAGE_EMULATOR_HOST", gcs.url())
            .env("CIOFS_STATE_DIR", format!("{w}/state"))
            .output()
            .expect("ciofs export runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    export(&source, "one.tar");

    // fake-gcs-server keeps no bucket labels or storage class: the archive
    // extracted into the mount has them, and the proxy shows they were sent.
    ok(&format!("mkdir {w}/given && tar xf {w}/one.tar -C {w}/given"));
    let bucket_document = format!("{w}/given/{source}/storage/{bucket}/.meta/_bucket.json");
    let mut settings: Value = serde_json::from_slice(&std::fs::read(&bucket_document).unwrap()).unwrap();
    settings["labels"] = json!({"cost-center": "sales"});
    settings["storage_class"] = json!("NEARLINE");
    std::fs::write(&bucket_document, serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
    // In name order, as the export has it: `.meta/` before the rest.
    ok(&format!("tar cf {w}/given.tar --sort=name -C {w}/given {source}"));

    let gcs_proxy = common::proxy::RecordingProxy::start(&gcs.url());
    let pubsub_host = std::env::var("PUBSUB_EMULATOR_HOST").expect("PUBSUB_EMULATOR_HOST");
    let pubsub_proxy = common::proxy::RecordingProxy::start(&pubsub_host);
    let mut mount = FuseMount::start_with_env(
        &["--project", &target],
        &[("STORAGE_EMULATOR_HOST", gcs_proxy.url()), ("PUBSUB_EMULATOR_HOST", pubsub_proxy.url())],
    );
    let root = mount.path("").display().to_string();
    let rename = format!("--transform 's,^{source}/storage/{bucket},{source}/storage/{copied},'");
    let extracted = sh(&format!("timeout 120 tar xf {w}/given.tar --strip-components=1 {rename} -C {root}/{target}"));
    let errors = std::fs::read_to_string(mount.path(".ciofs/errors")).unwrap_or_default();
    assert!(extracted.status.success(), "{}\n{errors}", String::from_utf8_lossy(&extracted.stderr));
    // Unmounting creates whatever still waits for its settings.
    mount.terminate();
    let errors = mount.log_text();
    assert!(!errors.contains(" WARN ") && !errors.contains("ERROR"), "{errors}");
    let sent = gcs_proxy.sent();
    let created = sent.split("POST /storage/v1/b").nth(1).expect("the bucket was created through the proxy");
    assert!(created.contains(r#""cost-center":"sales""#) && created.contains("NEARLINE"), "{created}");
    assert!(pubsub_proxy.sent().contains(r#""labels":{"#), "the topic's labels went with its creation");

    export(&target, "two.tar");
    ok(&format!("mkdir {w}/one {w}/two && tar xf {w}/one.tar -C {w}/one && tar xf {w}/two.tar -C {w}/two"));
    let one = files_under(&work.path().join("one").join(&source));
    let mut two = files_under(&work.path().join("two").join(&target));
    // fake-gcs-server keeps no project of a bucket and lists every bucket
    // in every project: the target's export has the source's bucket too.
    two.retain(|path, _| !path.starts_with(&format!("storage/{bucket}/")));
    let renamed = |path: &str| path.replacen(&format!("storage/{bucket}"), &format!("storage/{copied}"), 1);
    let one_paths: Vec<String> = one.keys().map(|p| renamed(p)).collect();
    assert_eq!(one_paths, two.keys().cloned().collect::<Vec<_>>(), "the same files");
    let mut compared = 0;
    for (path, original) in &one {
        let copy = &two[&renamed(path)];
        let Ok(mut original) = serde_json::from_slice::<Value>(original) else {
            assert_eq!(original, copy, "{path}: the same bytes");
            continue;
        };
        let mut copy: Value = serde_json::from_slice(copy).unwrap_or_else(|e| panic!("{path}: {e}"));
        let document_type = original["type"].as_str().unwrap_or_default().to_string();
        for field in fields_that_must_differ(&document_type) {
            original.as_object_mut().map(|o| o.remove(*field));
            copy.as_object_mut().map(|o| o.remove(*field));
        }
        assert_eq!(original, copy, "{path} ({document_type})");
        compared += 1;
    }
    assert_eq!(compared, 11, "every document was compared");
    let topic = &serde_json::from_slice::<Value>(&one["pubsub/topics/events/config.json"]).unwrap();
    assert_eq!(topic["labels"], json!({"env": "prod", "team": "data"}), "the source has what is compared");
}
