//! Where events go and where they are consumed from: the SDK client (endpoint, region and
//! credentials from the environment) and a queue with its dead-letter queue and redrive policy.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use cqrs_core::{Error, Result};

/// The SQS client of a relay or a consumer: the endpoint, region and credentials from the usual
/// AWS configuration (environment variables `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...; profile
/// files), the region `us-east-1` if none is configured, the endpoint overridden by `endpoint`
/// if given (a local server such as moto), else by `SQS_ENDPOINT` if set.
///
/// HTTPS goes through rustls with the *ring* provider (the one the rest of the workspace
/// builds), not the SDK's default aws-lc, which is a large C build.
///
/// ```no_run
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let client = cqrs_sqs::sqs_client(Some("http://127.0.0.1:9324")).await;
/// let queues = client.list_queues().send().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn sqs_client(endpoint: Option<&str>) -> Client {
    let http = https();
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::from_static("us-east-1"));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(region);
    let from_env = std::env::var("SQS_ENDPOINT").ok();
    if let Some(url) = endpoint.or(from_env.as_deref()) {
        loader = loader.endpoint_url(url);
    }
    Client::new(&loader.load().await)
}

/// A client of the SQS-compatible server at `endpoint` with static credentials (a local server
/// such as moto checks none: any will do), the region from `AWS_REGION`, else `us-east-1`.
///
/// ```
/// let client = cqrs_sqs::sqs_client_with_keys("http://127.0.0.1:9324", "testing", "testing");
/// ```
pub fn sqs_client_with_keys(endpoint: &str, key: &str, secret: &str) -> Client {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .http_client(https())
        .endpoint_url(endpoint)
        .region(aws_sdk_sqs::config::Region::new(region))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            key, secret, None, None, "static",
        ))
        .build();
    Client::from_conf(config)
}

/// The client of a broker URL: `sqs://` for AWS as configured in the environment (see
/// [`sqs_client`]); `sqs://host:port` for a server at `http://host:port` with the
/// environment's credentials; `sqs://key:secret@host:port` with those static ones.
///
/// ```
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// let client = cqrs_sqs::sqs_client_for_url("sqs://testing:testing@127.0.0.1:9324").await?;
/// assert!(cqrs_sqs::sqs_client_for_url("http://127.0.0.1:9324").await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub async fn sqs_client_for_url(url: &str) -> Result<Client> {
    let rest = url
        .strip_prefix("sqs://")
        .ok_or_else(|| Error::Invalid(format!("not an sqs:// URL: {url:?}")))?
        .trim_end_matches('/');
    if rest.is_empty() {
        return Ok(sqs_client(None).await);
    }
    match rest.rsplit_once('@') {
        Some((keys, host)) => {
            let (key, secret) = keys.split_once(':').ok_or_else(|| {
                Error::Invalid(format!("sqs:// URL keys must be key:secret: {url:?}"))
            })?;
            Ok(sqs_client_with_keys(&format!("http://{host}"), key, secret))
        }
        None => Ok(sqs_client(Some(&format!("http://{rest}"))).await),
    }
}

/// HTTPS (and plain HTTP, for a local server) through rustls with *ring*.
fn https() -> aws_sdk_sqs::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A queue with its dead-letter queue (`<name>-dlq`, `.fifo` kept at the end for a FIFO queue)
/// and its bounds: the receives of a message before the queue's redrive policy moves it to
/// the dead-letter queue, the visibility timeout, the long-polling wait and the delay before a
/// failed message is tried again.
///
/// A name ending in `.fifo` is a FIFO queue: messages of one group (one stream) are handed out
/// in order, one batch of a group in flight at a time, and deduplicated by id for five minutes.
///
/// ```
/// use std::time::Duration;
/// use cqrs_sqs::SqsQueue;
///
/// let queue = SqsQueue::new("bank-notifier.fifo").max_receives(3).visibility(Duration::from_secs(10));
/// assert!(queue.is_fifo());
/// assert_eq!(queue.dead_letter_queue(), "bank-notifier-dlq.fifo");
/// assert_eq!(SqsQueue::new("orders").dead_letter_queue(), "orders-dlq");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsQueue {
    name: String,
    max_receives: u32,
    visibility: Duration,
    wait: Duration,
    retry_after: Duration,
}

impl SqsQueue {
    /// The queue `name`: 5 receives, a visibility timeout of 30 s, 10 s long polls, failures
    /// tried again after 1 s.
    pub fn new(name: impl Into<String>) -> Self {
        SqsQueue {
            name: name.into(),
            max_receives: 5,
            visibility: Duration::from_secs(30),
            wait: Duration::from_secs(10),
            retry_after: Duration::from_secs(1),
        }
    }

    /// Receives of a message (the first included) before the redrive policy moves it to the
    /// dead-letter queue (`maxReceiveCount`), at least 1.
    pub fn max_receives(mut self, n: u32) -> Self {
        self.max_receives = n.max(1);
        self
    }

    /// How long a received message stays hidden from other consumers (whole seconds, at least
    /// one). A consumer extends it while a batch takes long; a consumer that dies leaves its
    /// messages to come back after it.
    pub fn visibility(mut self, timeout: Duration) -> Self {
        self.visibility = timeout.max(Duration::from_secs(1));
        self
    }

    /// How long one receive waits for messages (long polling, whole seconds, up to 20).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(Duration::from_secs(20));
        self
    }

    /// How long a message whose handler failed stays hidden before its next try (whole
    /// seconds; 0 for at once).
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = delay;
        self
    }

    /// The queue of `category`'s events beside this one, with the same bounds:
    /// `<name>-<category>`, before the `.fifo` suffix of a FIFO queue (what
    /// [`SqsRelay::by_category`](crate::SqsRelay::by_category) sends to).
    ///
    /// ```
    /// use cqrs_sqs::SqsQueue;
    ///
    /// assert_eq!(SqsQueue::new("bank.fifo").for_category("account").name(), "bank-account.fifo");
    /// assert_eq!(SqsQueue::new("bank").for_category("account").name(), "bank-account");
    /// ```
    pub fn for_category(&self, category: &str) -> SqsQueue {
        let name = match self.name.strip_suffix(".fifo") {
            Some(base) => format!("{base}-{category}.fifo"),
            None => format!("{}-{category}", self.name),
        };
        SqsQueue {
            name,
            ..self.clone()
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a FIFO queue (its name ends in `.fifo`).
    pub fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }

    /// Its dead-letter queue: `<name>-dlq`, before the `.fifo` suffix of a FIFO queue.
    pub fn dead_letter_queue(&self) -> String {
        match self.name.strip_suffix(".fifo") {
            Some(base) => format!("{base}-dlq.fifo"),
            None => format!("{}-dlq", self.name),
        }
    }

    pub(crate) fn receives(&self) -> u32 {
        self.max_receives
    }

    pub(crate) fn visibility_secs(&self) -> i32 {
        secs(self.visibility)
    }

    pub(crate) fn wait_secs(&self) -> i32 {
        secs(self.wait)
    }

    pub(crate) fn retry_secs(&self) -> i32 {
        secs(self.retry_after)
    }

    /// Creates the dead-letter queue and the queue with its redrive policy if missing (as
    /// SQS's `CreateQueue` does: an existing queue with the same attributes is kept), and
    /// returns their URLs.
    ///
    /// ```no_run
    /// use cqrs_sqs::{SqsQueue, sqs_client};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let client = sqs_client(None).await;
    /// let urls = SqsQueue::new("bank-notifier.fifo").declare(&client).await?;
    /// println!("{} (dead letters: {})", urls.queue, urls.dead_letters);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn declare(&self, client: &Client) -> Result<QueueUrls> {
        let dead_letters = create(client, &self.dead_letter_queue(), self.is_fifo(), None).await?;
        let arn = client
            .get_queue_attributes()
            .queue_url(&dead_letters)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sdk_error)?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| Error::backend("the dead-letter queue has no ARN"))?;
        let redrive = format!(
            r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"{}"}}"#,
            self.max_receives
        );
        let queue = create(
            client,
            &self.name,
            self.is_fifo(),
            Some((redrive, self.visibility_secs())),
        )
        .await?;
        Ok(QueueUrls {
            queue,
            dead_letters,
        })
    }
}

/// The URLs of a declared [`SqsQueue`] and of its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    /// The queue's URL.
    pub queue: String,
    /// Its dead-letter queue's URL.
    pub dead_letters: String,
}

/// Creates the queue `name` (or finds it) and returns its URL.
pub(crate) async fn create(
    client: &Client,
    name: &str,
    fifo: bool,
    redrive: Option<(String, i32)>,
) -> Result<String> {
    let mut request = client.create_queue().queue_name(name);
    if fifo {
        request = request.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some((policy, visibility)) = redrive {
        request = request
            .attributes(QueueAttributeName::RedrivePolicy, policy)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility.to_string(),
            );
    }
    let out = request.send().await.map_err(sdk_error)?;
    out.queue_url
        .ok_or_else(|| Error::backend(format!("no URL for the queue {name}")))
}

/// The SDK's error, with the service's code and message where it has them.
pub(crate) fn sdk_error<E, R>(e: aws_sdk_sqs::error::SdkError<E, R>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    Error::backend(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}
