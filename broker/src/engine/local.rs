//! The single-node engine: the node sequences every topic itself.

use async_trait::async_trait;

use super::{Engine, PublishError, PublishItem, Published, Sequencer};

/// Single-node engine; the embedded default.
pub struct LocalEngine {
    sequencer: Sequencer,
}

impl LocalEngine {
    /// Wraps a started sequencer.
    pub fn new(sequencer: Sequencer) -> Self {
        LocalEngine { sequencer }
    }
}

#[async_trait]
impl Engine for LocalEngine {
    async fn publish(&self, items: Vec<PublishItem>) -> Result<Vec<Published>, PublishError> {
        self.sequencer.publish(items).await
    }

    fn readiness(&self) -> Result<(), String> {
        self.sequencer.readiness()
    }

    async fn shutdown(&self) {
        self.sequencer.shutdown().await;
    }
}
