//! Completion tokens: `s:{partition}:{incarnation}:{seq}:{instance}` for
//! orchestration steps and `a:{partition}:{incarnation}:{execution}:{task}:{instance}`
//! for activities. The incarnation changes every time the engine opens,
//! so a token handed out before a restart is stale after it.

use basalt_runtime::{CompletionToken, EntityId, Error, InstanceId};

pub(crate) struct StepToken {
    pub partition: u32,
    pub incarnation: u64,
    pub seq: u64,
    /// How many inbox events the step held when the worker took it.
    pub consumed: u32,
    /// Its `OrchestratorStarted` time.
    pub started_ms: u64,
    pub instance_id: InstanceId,
}

pub(crate) struct ActivityToken {
    pub partition: u32,
    pub incarnation: u64,
    pub execution: u64,
    pub task_id: i32,
    pub instance_id: InstanceId,
}

impl StepToken {
    pub fn encode(&self) -> CompletionToken {
        CompletionToken(format!(
            "s:{}:{}:{}:{}:{}:{}",
            self.partition,
            self.incarnation,
            self.seq,
            self.consumed,
            self.started_ms,
            self.instance_id
        ))
    }

    pub fn parse(token: &CompletionToken) -> Result<StepToken, Error> {
        let bad = || Error::InvalidInput(format!("malformed step token {:?}", token.0));
        let mut parts = token.0.splitn(7, ':');
        if parts.next() != Some("s") {
            return Err(bad());
        }
        let partition = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let incarnation = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let consumed = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let started_ms = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let instance_id = InstanceId::new(parts.next().ok_or_else(bad)?)?;
        Ok(StepToken {
            partition,
            incarnation,
            seq,
            consumed,
            started_ms,
            instance_id,
        })
    }
}

impl ActivityToken {
    pub fn encode(&self) -> CompletionToken {
        CompletionToken(format!(
            "a:{}:{}:{}:{}:{}",
            self.partition, self.incarnation, self.execution, self.task_id, self.instance_id
        ))
    }

    pub fn parse(token: &CompletionToken) -> Result<ActivityToken, Error> {
        let bad = || Error::InvalidInput(format!("malformed activity token {:?}", token.0));
        let mut parts = token.0.splitn(6, ':');
        if parts.next() != Some("a") {
            return Err(bad());
        }
        let partition = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let incarnation = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let execution = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let task_id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let instance_id = InstanceId::new(parts.next().ok_or_else(bad)?)?;
        Ok(ActivityToken {
            partition,
            incarnation,
            execution,
            task_id,
            instance_id,
        })
    }
}

/// `e:{partition}:{incarnation}:{seq}:{entity}`: one batch of entity operations.
pub(crate) struct EntityToken {
    pub partition: u32,
    pub incarnation: u64,
    pub seq: u64,
    pub entity: EntityId,
}

impl EntityToken {
    pub fn encode(&self) -> CompletionToken {
        CompletionToken(format!(
            "e:{}:{}:{}:{}",
            self.partition, self.incarnation, self.seq, self.entity
        ))
    }

    pub fn parse(token: &CompletionToken) -> Result<EntityToken, Error> {
        let bad = || Error::InvalidInput(format!("malformed entity token {:?}", token.0));
        let mut parts = token.0.splitn(5, ':');
        if parts.next() != Some("e") {
            return Err(bad());
        }
        let partition = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let incarnation = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let seq = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let entity = EntityId::parse(parts.next().ok_or_else(bad)?)?;
        Ok(EntityToken {
            partition,
            incarnation,
            seq,
            entity,
        })
    }
}
