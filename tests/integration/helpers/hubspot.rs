//! A loopback server shaped like HubSpot's CRM v3 objects API, with state: batch upserts by a
//! unique property create or update records, batch reads and the contact search answer from
//! them, as HubSpot documents (200, or 207 with `OBJECT_NOT_FOUND` errors for missing ids).
//! Tests change or delete records behind plumbline's back to make drift.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct Record {
    pub id: u64,
    pub object: String,
    pub properties: Map<String, Value>,
    pub created_ms: i64,
}

#[derive(Default)]
struct Inner {
    records: Vec<Record>,
    next_id: u64,
    now_ms: i64,
    upserts: usize,
}

#[derive(Clone)]
pub struct Hubspot {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

type Shared = Arc<Mutex<Inner>>;

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::to_owned)
        .or_else(|| v.is_number().then(|| v.to_string()))
}

fn iso(ms: i64) -> String {
    let t = plumbline::contract::Timestamp::from_unix(ms / 1000).expect("in range");
    t.to_string().replace('Z', ".000Z")
}

fn view(r: &Record, properties: &[String]) -> Value {
    let mut props = Map::new();
    for p in properties {
        if let Some(v) = r.properties.get(p) {
            props.insert(p.clone(), v.clone());
        }
    }
    props.insert("createdate".into(), json!(iso(r.created_ms)));
    props.insert("hs_object_id".into(), json!(r.id.to_string()));
    json!({
        "id": r.id.to_string(),
        "properties": props,
        "createdAt": iso(r.created_ms),
        "updatedAt": iso(r.created_ms),
        "archived": false,
    })
}

async fn upsert(
    State(s): State<Shared>,
    Path(object): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut inner = s.lock().expect("state");
    inner.upserts += 1;
    let mut results = Vec::new();
    for input in body["inputs"].as_array().into_iter().flatten() {
        let id_property = input["idProperty"].as_str().unwrap_or("hs_object_id");
        let id = text(&input["id"]).unwrap_or_default();
        let now = inner.now_ms;
        let found = inner.records.iter().position(|r| {
            r.object == object && r.properties.get(id_property).and_then(text) == Some(id.clone())
        });
        let index = found.unwrap_or_else(|| {
            inner.next_id += 1;
            let record = Record {
                id: inner.next_id,
                object: object.clone(),
                properties: Map::from_iter([(id_property.to_owned(), json!(id))]),
                created_ms: now,
            };
            inner.records.push(record);
            inner.records.len() - 1
        });
        if let Some(props) = input["properties"].as_object() {
            for (k, v) in props {
                inner.records[index]
                    .properties
                    .insert(k.clone(), json!(text(v).unwrap_or_default()));
            }
        }
        results.push(view(&inner.records[index], &[]));
    }
    (
        StatusCode::OK,
        Json(json!({"status": "COMPLETE", "results": results})),
    )
}

async fn read(
    State(s): State<Shared>,
    Path(object): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let inner = s.lock().expect("state");
    let id_property = body["idProperty"].as_str().unwrap_or("hs_object_id");
    let properties: Vec<String> = body["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for input in body["inputs"].as_array().into_iter().flatten() {
        let id = text(&input["id"]).unwrap_or_default();
        match inner.records.iter().find(|r| {
            r.object == object && r.properties.get(id_property).and_then(text) == Some(id.clone())
        }) {
            Some(r) => results.push(view(r, &properties)),
            None => missing.push(id),
        }
    }
    if missing.is_empty() {
        return (
            StatusCode::OK,
            Json(json!({"status": "COMPLETE", "results": results})),
        );
    }
    (
        StatusCode::MULTI_STATUS,
        Json(json!({
            "status": "COMPLETE",
            "results": results,
            "numErrors": 1,
            "errors": [{
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some objects, they may be deleted or not exist.",
                "context": {"ids": missing},
            }],
        })),
    )
}

async fn search(State(s): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let inner = s.lock().expect("state");
    let filters = body["filterGroups"][0]["filters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let properties: Vec<String> = body["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    let matches = |r: &Record| {
        filters.iter().all(|f| {
            let name = f["propertyName"].as_str().unwrap_or_default();
            let value = f["value"]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            match (name, f["operator"].as_str().unwrap_or_default()) {
                ("createdate", "GTE") => r.created_ms >= value,
                ("createdate", "LT") => r.created_ms < value,
                (p, "HAS_PROPERTY") => r.properties.get(p).is_some_and(|v| v != ""),
                _ => false,
            }
        })
    };
    let all: Vec<&Record> = inner
        .records
        .iter()
        .filter(|r| r.object == "contacts" && matches(r))
        .collect();
    let limit = usize::try_from(body["limit"].as_u64().unwrap_or(10)).unwrap_or(100);
    let after = body["after"]
        .as_str()
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all
        .iter()
        .skip(after)
        .take(limit)
        .map(|r| view(r, &properties))
        .collect();
    let mut answer = json!({"total": all.len(), "results": page});
    if after + limit < all.len() {
        answer["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    Json(answer)
}

impl Hubspot {
    pub async fn start(now_ms: i64) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            now_ms,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/crm/v3/objects/{object}/batch/upsert", post(upsert))
            .route("/crm/v3/objects/{object}/batch/read", post(read))
            .route("/crm/v3/objects/contacts/search", post(search))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { url, inner }
    }

    pub fn records(&self, object: &str) -> Vec<Record> {
        let inner = self.inner.lock().expect("state");
        inner
            .records
            .iter()
            .filter(|r| r.object == object)
            .cloned()
            .collect()
    }

    pub fn upserts(&self) -> usize {
        self.inner.lock().expect("state").upserts
    }

    /// Sets a property of the record whose `property` is `value`, as a person in the CRM would.
    pub fn edit(&self, object: &str, (property, value): (&str, &str), set: (&str, &str)) {
        let mut inner = self.inner.lock().expect("state");
        let record = inner
            .records
            .iter_mut()
            .find(|r| r.object == object && r.properties.get(property) == Some(&json!(value)))
            .expect("record");
        record.properties.insert(set.0.to_owned(), json!(set.1));
    }

    /// Deletes the record whose `property` is `value`.
    pub fn delete(&self, object: &str, (property, value): (&str, &str)) {
        let mut inner = self.inner.lock().expect("state");
        inner
            .records
            .retain(|r| !(r.object == object && r.properties.get(property) == Some(&json!(value))));
    }
}
