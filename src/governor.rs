//! [`ConcurrencyGovernor`]: bounds on concurrent LLM streams, on concurrent tool executions and
//! on both together, made of three [`ConcurrencyLimiter`]s (a stream and a tool limiter nested
//! under a global one).

use crate::error::{ConcurrencyError, LimitError, check_governor_limits};
use crate::limiter::ConcurrencyLimiter;
use crate::permit::Permit;
use crate::stats::GovernorStats;

/// Governs concurrency across streaming, tool execution and both together.
///
/// Three limiters: `stream` (`max_streams` slots) and `tool` (`max_tools` slots), both nested
/// under `global` (`max_global` slots) with [`Builder::parent`](crate::Builder::parent). A
/// permit holds a slot of its category and a global slot, and dropping it releases both.
///
/// Guarantees:
///
/// * never more than `max_streams` streams, `max_tools` tool executions and `max_global` of
///   both together hold a permit;
/// * **a caller never holds a global slot while it waits for its category's slot**: the global
///   slot is taken only once the category's is held. So a burst of tool calls beyond
///   `max_tools`, however long its queue, never keeps a stream from starting while a global slot
///   is free, and the other way round;
/// * within a category, and at the global level across both, slots go to waiters in FIFO
///   order; at most `max_streams + max_tools` callers wait at the global level, each holding
///   its category's slot;
/// * a caller that gives up (its future is dropped) at either level takes and loses nothing.
///
/// The governor is a cheap handle: clones share the same slots, and it is `Send + Sync`.
///
/// Any `max_global` of at least 1 is accepted. Below `max_streams + max_tools` the categories
/// share the global slots (FIFO); below `max_streams` or `max_tools` the global limit is the
/// effective limit of that category too.
///
/// # Examples
///
/// ```
/// use ferrolimit::ConcurrencyGovernor;
///
/// # async fn call_tool() {}
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let governor = ConcurrencyGovernor::new(4, 8, 16);
/// let permit = governor.acquire_tool().await?;
/// call_tool().await;
/// drop(permit); // releases the tool slot and the global slot
/// assert_eq!(governor.stats().global_available, 16);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyGovernor {
    streams: ConcurrencyLimiter,
    tools: ConcurrencyLimiter,
    global: ConcurrencyLimiter,
}

impl ConcurrencyGovernor {
    /// A governor of `max_streams` concurrent streams and `max_tools` concurrent tool
    /// executions, at most `max_global` of both together.
    ///
    /// # Panics
    ///
    /// When a limit is 0 or above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT), with the
    /// message of [`try_new`](Self::try_new)'s error. Use `try_new` for limits that are not
    /// known to be valid.
    ///
    /// # Examples
    ///
    /// ```
    /// use ferrolimit::ConcurrencyGovernor;
    ///
    /// let governor = ConcurrencyGovernor::new(2, 4, 4);
    /// assert_eq!(governor.stats().tools_max, 4);
    /// ```
    #[must_use]
    pub fn new(max_streams: usize, max_tools: usize, max_global: usize) -> Self {
        Self::try_new(max_streams, max_tools, max_global)
            .unwrap_or_else(|err| panic!("invalid ConcurrencyGovernor limits: {err}"))
    }

    /// Like [`new`](Self::new), returning invalid limits as an error.
    ///
    /// # Errors
    ///
    /// [`LimitError::MaxStreamsTooSmall`], [`LimitError::MaxToolsTooSmall`] or
    /// [`LimitError::MaxGlobalTooSmall`] for a limit of 0 (the message names the argument:
    /// `max_tools must be >= 1, got 0`), and the `*TooLarge` variants above
    /// [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT). A `max_global` below the other two is
    /// not an error (see the type's docs).
    ///
    /// # Examples
    ///
    /// ```
    /// use ferrolimit::{ConcurrencyGovernor, LimitError};
    ///
    /// let err = ConcurrencyGovernor::try_new(4, 0, 16).unwrap_err();
    /// assert_eq!(err, LimitError::MaxToolsTooSmall(0));
    /// assert_eq!(err.to_string(), "max_tools must be >= 1, got 0");
    /// ```
    pub fn try_new(max_streams: usize, max_tools: usize, max_global: usize) -> Result<Self, LimitError> {
        let (max_streams, max_tools, max_global) =
            check_governor_limits(max_streams as i128, max_tools as i128, max_global as i128)?;
        let global = ConcurrencyLimiter::builder(max_global as usize)
            .name("global")
            .build()?;
        let nested = |max: u32, name: &str| {
            ConcurrencyLimiter::builder(max as usize)
                .name(name)
                .parent(global.clone())
                .build()
        };
        Ok(Self {
            streams: nested(max_streams, "stream")?,
            tools: nested(max_tools, "tool")?,
            global,
        })
    }

    /// A governor of 4 concurrent streams, 8 concurrent tool executions and 16 together.
    #[must_use]
    pub fn with_defaults() -> Self {
        Self::new(4, 8, 16)
    }

    /// Waits for a stream slot and then a global slot. See [`acquire_tool`](Self::acquire_tool).
    ///
    /// # Errors
    ///
    /// None in practice: see [`ConcurrencyError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future takes and loses nothing, at either level.
    pub async fn acquire_stream(&self) -> Result<ConcurrencyPermit, ConcurrencyError> {
        self.acquire_stream_for("stream").await
    }

    /// [`acquire_stream`](Self::acquire_stream), with `source` naming the caller in the wait
    /// spans.
    ///
    /// # Errors
    ///
    /// None in practice: see [`ConcurrencyError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future takes and loses nothing, at either level.
    pub async fn acquire_stream_for(&self, source: &str) -> Result<ConcurrencyPermit, ConcurrencyError> {
        acquire(&self.streams, source).await
    }

    /// Waits for a tool slot (FIFO among tool callers) and then, holding it, for a global slot
    /// (FIFO among streams and tools). No global slot is held while waiting for the tool slot.
    ///
    /// A caller that waits opens a span `waiting for tool concurrency` while it waits for the
    /// tool slot, and `waiting for global concurrency` while it waits for the global one.
    ///
    /// # Errors
    ///
    /// None in practice: see [`ConcurrencyError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future takes and loses nothing: while it waits for the tool slot it holds
    /// nothing, and while it waits for the global slot its tool slot is given back.
    pub async fn acquire_tool(&self) -> Result<ConcurrencyPermit, ConcurrencyError> {
        self.acquire_tool_for("tool").await
    }

    /// [`acquire_tool`](Self::acquire_tool), with `source` naming the caller in the wait spans.
    ///
    /// # Errors
    ///
    /// None in practice: see [`ConcurrencyError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future takes and loses nothing, at either level.
    pub async fn acquire_tool_for(&self, source: &str) -> Result<ConcurrencyPermit, ConcurrencyError> {
        acquire(&self.tools, source).await
    }

    /// Takes a stream slot and a global slot if both are free (and nobody is queued for
    /// either); never waits.
    #[must_use]
    pub fn try_acquire_stream(&self) -> Option<ConcurrencyPermit> {
        self.streams.try_acquire().map(ConcurrencyPermit)
    }

    /// Takes a tool slot and a global slot if both are free (and nobody is queued for either);
    /// never waits. Returns `None` otherwise, holding nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use ferrolimit::ConcurrencyGovernor;
    ///
    /// let governor = ConcurrencyGovernor::new(1, 1, 2);
    /// let permit = governor.try_acquire_tool().expect("free");
    /// assert!(governor.try_acquire_tool().is_none());
    /// drop(permit);
    /// assert!(governor.try_acquire_tool().is_some());
    /// ```
    #[must_use]
    pub fn try_acquire_tool(&self) -> Option<ConcurrencyPermit> {
        self.tools.try_acquire().map(ConcurrencyPermit)
    }

    /// The free and total slots of each layer.
    #[must_use]
    pub fn stats(&self) -> GovernorStats {
        GovernorStats {
            streams_available: self.streams.available_count(),
            streams_max: self.streams.max_running(),
            tools_available: self.tools.available_count(),
            tools_max: self.tools.max_running(),
            global_available: self.global.available_count(),
            global_max: self.global.max_running(),
        }
    }

    /// The stream limiter (named `stream`, nested under the global one).
    #[must_use]
    pub const fn stream_limiter(&self) -> &ConcurrencyLimiter {
        &self.streams
    }

    /// The tool limiter (named `tool`, nested under the global one).
    #[must_use]
    pub const fn tool_limiter(&self) -> &ConcurrencyLimiter {
        &self.tools
    }

    /// The global limiter (named `global`).
    #[must_use]
    pub const fn global_limiter(&self) -> &ConcurrencyLimiter {
        &self.global
    }
}

impl Default for ConcurrencyGovernor {
    /// [`ConcurrencyGovernor::with_defaults`].
    fn default() -> Self {
        Self::with_defaults()
    }
}

async fn acquire(category: &ConcurrencyLimiter, source: &str) -> Result<ConcurrencyPermit, ConcurrencyError> {
    match category.acquire_for(source).await {
        Ok(permit) => Ok(ConcurrencyPermit(permit)),
        // The only acquire error is a full queue, and a governor's queues are unbounded.
        Err(err) => unreachable!("a governor's queue was full: {err}"),
    }
}

/// A stream or tool slot held together with a global slot; dropping it releases both.
#[derive(Debug)]
#[must_use = "the slots are released as soon as the permit is dropped"]
pub struct ConcurrencyPermit(Permit);

impl ConcurrencyPermit {
    /// The stream or tool limiter whose slot this is (its [`parent`](ConcurrencyLimiter::parent)
    /// is the global limiter).
    #[must_use]
    pub const fn limiter(&self) -> &ConcurrencyLimiter {
        self.0.limiter()
    }
}
