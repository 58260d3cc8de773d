//! The head: in-memory series with their open (and not yet persisted) chunks.
//!
//! Each series has immutable labels and a mutex over its chunks, so an appender and a reader
//! contend only on the one series, and only for an append or a chunk clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::index::Index;
use crate::chunk::Chunk;
use crate::labels::Labels;

/// A series in the head.
#[derive(Debug)]
pub struct HeadSeries {
    /// Dense id, also the series' id in the current WAL generation.
    pub id: u64,
    /// Its labels.
    pub labels: Labels,
    data: Mutex<SeriesData>,
}

/// The mutable part of a head series.
#[derive(Debug)]
pub struct SeriesData {
    /// Chunks not yet persisted; the last one takes appends.
    pub chunks: Vec<Chunk>,
    /// Newest timestamp ever appended (survives persisting), for out-of-order checks.
    pub last_t: i64,
}

impl HeadSeries {
    /// Locks the series data; a poisoned lock is taken over, since chunk data stays valid
    /// (a panic cannot leave a chunk half-appended: appends don't panic).
    pub fn lock(&self) -> MutexGuard<'_, SeriesData> {
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SeriesData {
    /// Appends a sample; false when `t` is not after the last timestamp.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        if t <= self.last_t {
            return false;
        }
        match self.chunks.last_mut() {
            Some(c) if !c.is_full_for(t) => c.append(t, v),
            _ => {
                let mut c = Chunk::new();
                c.append(t, v);
                self.chunks.push(c);
            }
        }
        self.last_t = t;
        true
    }
}

/// All head series and their index.
#[derive(Debug, Default)]
pub struct Head {
    by_labels: HashMap<Labels, Arc<HeadSeries>>,
    /// Series by id.
    pub series: Vec<Arc<HeadSeries>>,
    /// The label index over head series.
    pub index: Index,
}

impl Head {
    /// The series with these labels, if any.
    pub fn get(&self, labels: &Labels) -> Option<&Arc<HeadSeries>> {
        self.by_labels.get(labels)
    }

    /// Creates a series (the caller checked it is absent); `last_t` is the newest persisted time.
    pub fn create(&mut self, labels: &Labels, last_t: i64) -> Arc<HeadSeries> {
        let id = self.series.len() as u64;
        let s = Arc::new(HeadSeries {
            id,
            labels: labels.clone(),
            data: Mutex::new(SeriesData {
                chunks: Vec::new(),
                last_t,
            }),
        });
        self.index.add(id as u32, labels);
        self.by_labels.insert(labels.clone(), Arc::clone(&s));
        self.series.push(Arc::clone(&s));
        s
    }
}
