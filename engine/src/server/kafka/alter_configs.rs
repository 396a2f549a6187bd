//! IncrementalAlterConfigs: a topic's settings by Kafka's names (SET only: a setting returns
//! to its default with `sluice topic alter`), and a share group's settings by Kafka's group
//! config names, so that `kafka-configs.sh --entity-type groups` and the Admin client set
//! them as on Kafka.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::admin::setting_name;
use super::{KafkaContext, error_code};
use crate::queues::{GroupSettings, StartAt};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_GROUP: i8 = 32;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Why one resource's change was refused: a Kafka error code and a message.
type Refusal = (i16, String);

fn invalid(message: String) -> Refusal {
    (ResponseError::InvalidConfig.code(), message)
}

pub(super) async fn answer(
    request: IncrementalAlterConfigsRequest,
    context: &KafkaContext,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for resource in request.resources {
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => tokio::task::block_in_place(|| {
                alter_topic(&resource, request.validate_only, context)
            }),
            RESOURCE_GROUP => alter_share_group(&resource, request.validate_only, context).await,
            other => Err((
                ResponseError::InvalidRequest.code(),
                format!("resource type {other}: only topics and share groups have settings here"),
            )),
        };
        let (code, message) = match outcome {
            Ok(()) => (0, None),
            Err((code, message)) => (code, Some(StrBytes::from_string(message))),
        };
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn alter_topic(
    resource: &AlterConfigsResource,
    validate_only: bool,
    context: &KafkaContext,
) -> Result<(), Refusal> {
    let mut overrides = Vec::new();
    for config in &resource.configs {
        let name = config.name.as_str();
        let value = match (config.config_operation, &config.value) {
            (OP_SET, Some(value)) => value.as_str().to_string(),
            _ => {
                return Err(invalid(format!(
                    "{name}: only SET is served for topics; `sluice topic alter` returns a setting to its default"
                )));
            }
        };
        overrides.push((setting_name(name), value));
    }
    let topic = resource.resource_name.as_str();
    let existing = context
        .log
        .topic(topic)
        .map_err(|e| (error_code(&e), e.to_string()))?;
    if validate_only {
        return existing
            .config()
            .with_overrides(&overrides)
            .map(drop)
            .map_err(|e| invalid(e.to_string()));
    }
    context
        .log
        .alter_topic(topic, &overrides, None)
        .map(drop)
        .map_err(|e| (error_code(&e), e.to_string()))
}

async fn alter_share_group(
    resource: &AlterConfigsResource,
    validate_only: bool,
    context: &KafkaContext,
) -> Result<(), Refusal> {
    let group = resource.resource_name.as_str();
    let defaults = context.shares.limits().defaults.clone();
    let mut settings = context
        .shares
        .describe(group)
        .map_or_else(|_| defaults.clone(), |d| d.settings);
    for config in &resource.configs {
        let value = match config.config_operation {
            OP_SET => config.value.as_ref().map(|v| v.as_str().to_string()),
            OP_DELETE => None,
            other => return Err(invalid(format!("operation {other} is not served"))),
        };
        set(&mut settings, &defaults, config.name.as_str(), value)?;
    }
    if validate_only {
        return Ok(());
    }
    context
        .shares
        .configure(group, settings)
        .await
        .map_err(|e| invalid(e.to_string()))
}

/// Sets one of Kafka's share-group configs on `settings` (`None`: back to the default).
fn set(
    settings: &mut GroupSettings,
    defaults: &GroupSettings,
    name: &str,
    value: Option<String>,
) -> Result<(), Refusal> {
    let number = |v: &str| -> Result<u64, Refusal> {
        v.parse()
            .map_err(|_| invalid(format!("{name}: `{v}` is not a number")))
    };
    match (name, value.as_deref()) {
        ("share.auto.offset.reset", None) => settings.start_at = defaults.start_at,
        ("share.auto.offset.reset", Some("earliest")) => settings.start_at = StartAt::Earliest,
        ("share.auto.offset.reset", Some("latest")) => settings.start_at = StartAt::Latest,
        ("share.record.lock.duration.ms", None) => {
            settings.record_lock_ms = defaults.record_lock_ms;
        }
        ("share.record.lock.duration.ms", Some(v)) => settings.record_lock_ms = number(v)?,
        ("share.delivery.count.limit", None) => {
            settings.max_deliveries = defaults.max_deliveries;
        }
        ("share.delivery.count.limit", Some(v)) => {
            settings.max_deliveries = u16::try_from(number(v)?)
                .map_err(|_| invalid(format!("{name}: `{v}` is too large")))?;
        }
        ("errors.deadletterqueue.topic.name", value) => {
            settings.dead_letter_topic = value.map(str::to_string);
        }
        (_, Some(v)) => {
            return Err(invalid(format!(
                "{name}={v}: Sluice's share groups take share.auto.offset.reset (earliest or latest), share.record.lock.duration.ms, share.delivery.count.limit and errors.deadletterqueue.topic.name"
            )));
        }
        (_, None) => return Err(invalid(format!("{name} is not a share-group setting here"))),
    }
    Ok(())
}
