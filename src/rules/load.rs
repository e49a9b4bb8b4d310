//! Reads a rules directory and compiles it into a [`Snapshot`], or explains, with file, line and
//! column, every reason it cannot. A rule set loads whole or not at all.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;
use zeroize::{Zeroize, Zeroizing};

use super::raw::{KeyStatus, RawAccessKey, RawFile, RawSettings};
use super::{
    AccessKey, Account, HostMatch, IdHash, KeyMaterial, KeyTable, LeakInfo, Origin, Route,
    RsaPublicKey, Secret, ServiceRisk, Settings, Snapshot, Temporary, User, WarningPart, Warnings,
};
use crate::auth::encoding::hex_lower;
use crate::inline_str::InlineStr;
use crate::policy::IpSet;
use crate::policy::allowlist::parse_cidr;
use crate::policy::mfa::totp::TotpSeed;
use crate::time::parse_duration;

/// Looks up an environment variable; injected so that `demo` and tests need not touch the
/// process environment.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub struct LoadOptions {
    pub env: EnvLookup,
    /// Sends every route to this upstream instead of the one in `routes.toml` (used by `demo`).
    pub upstream_override: Option<http::uri::Authority>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            env: Arc::new(|name| std::env::var(name).ok()),
            upstream_override: None,
        }
    }
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("upstream_override", &self.upstream_override)
            .finish_non_exhaustive()
    }
}

/// How strictly `check` (and `diff`) validate, beyond what `serve` does. The default is exactly
/// `serve`'s validation; [`load_dir`] uses it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Check that each key names exactly one secret (or public key, or security token) source,
    /// but read none of the environment variables and files: for CI of a rules repository,
    /// which has no real secrets. Keys then carry placeholder material.
    pub skip_secrets: bool,
    /// Accept a rule set with no `[[access_key]]` (which would refuse every request).
    pub allow_empty: bool,
}

/// One thing wrong (or worth a warning) in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Warnings at a line of `keys.toml`, for tests of how warnings are grouped and shown.
#[cfg(test)]
impl Problem {
    pub(crate) fn in_keys_file(line: usize, message: String) -> Problem {
        Problem {
            file: "keys.toml".into(),
            line,
            col: 1,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Why a rule set was refused. Every problem is reported, not just the first.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// Where a value from outside the rule files came from (a `secret_env`, a `secret_file`, …), in
/// the order the keys' compile hashed it into the content hash: enough to recompute that hash
/// without compiling ([`content_hash_now`]). Names and paths only, never a value or its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalInput {
    Env(String),
    File(PathBuf),
}

/// The outside values a key compile read, in order, and a digest over their digests.
struct InputHash {
    sha: Sha256,
    external: Vec<ExternalInput>,
}

impl InputHash {
    fn new() -> Self {
        InputHash {
            sha: Sha256::new(),
            external: Vec::new(),
        }
    }

    fn external(&mut self, from: ExternalInput, value: &str) {
        // The digest reveals nothing of the value.
        self.sha.update(Sha256::digest(value.as_bytes()));
        self.external.push(from);
    }
}

/// SHA-256 of each rule file's text, in order.
fn file_digests(sources: &[(String, String)]) -> Vec<[u8; 32]> {
    sources
        .iter()
        .map(|(_, text)| Sha256::digest(text.as_bytes()).into())
        .collect()
}

/// The content hash of rule files (name, length and digest of each, in order) and of the outside
/// values (the digest over their digests, [`InputHash`]).
fn content_hash_of<'a>(
    files: impl IntoIterator<Item = (&'a str, usize, &'a [u8; 32])>,
    external: &[u8; 32],
) -> String {
    let mut sha = Sha256::new();
    for (name, len, digest) in files {
        sha.update((name.len() as u64).to_le_bytes());
        sha.update(name.as_bytes());
        sha.update((len as u64).to_le_bytes());
        sha.update(digest);
    }
    sha.update(external);
    hex_lower(&sha.finalize())
}

/// The digest [`InputHash`] gives the outside values `external` have now; `None` when one of
/// them cannot be read.
fn external_digest_now(external: &[ExternalInput], opts: &LoadOptions) -> Option<[u8; 32]> {
    let mut sha = Sha256::new();
    for from in external {
        let value = match from {
            ExternalInput::Env(var) => Zeroizing::new((opts.env)(var)?),
            ExternalInput::File(path) => external_file_value(path).ok()?,
        };
        sha.update(Sha256::digest(value.as_bytes()));
    }
    Some(sha.finalize().into())
}

/// The content hash that compiling `sources` now would give, when the values from outside the
/// rule files are those of `external` (a compiled snapshot's [`Snapshot::external_inputs`]);
/// `None` when one of them cannot be read. Equal to that snapshot's hash exactly when the rule
/// set is unchanged: the rule files have the same names and bytes (so they name the same outside
/// values, in the same order) and each outside value is the same. A reload uses it to answer
/// `unchanged` without parsing or compiling ([`reload_sources`]).
pub fn content_hash_now(
    sources: &[(String, String)],
    external: &[ExternalInput],
    opts: &LoadOptions,
) -> Option<String> {
    let digests = file_digests(sources);
    let ext = external_digest_now(external, opts)?;
    Some(content_hash_of(
        sources
            .iter()
            .zip(&digests)
            .map(|((name, text), d)| (name.as_str(), text.len(), d)),
        &ext,
    ))
}

/// A secret, token, public-key or seed file's value as the rules use it: without its trailing
/// line ends.
fn external_file_value(path: &Path) -> std::io::Result<Zeroizing<String>> {
    let v = read_secret_file(path)?;
    Ok(Zeroizing::new(v.trim_end_matches(['\n', '\r']).to_string()))
}

struct SourceFile {
    name: Arc<str>,
    /// Empty for a file not read again by a reload ([`read_for_reload`]); `len` and `digest`
    /// are then those of the bytes read before.
    text: String,
    len: usize,
    digest: [u8; 32],
    stamp: Option<FileStamp>,
    /// Not read again by a reload: `text` is empty.
    unread: bool,
    /// Offset of the start of each line: every key, route and warning asks for its line, and
    /// counting newlines from the top each time made loading 100k keys quadratic. Found when
    /// first asked for: a reload that reuses a large key file's compiled keys never asks. A file
    /// a reload did not read again has the ones found when it was read, if any.
    line_starts: std::cell::OnceCell<Arc<[usize]>>,
}

/// A rule file's text may hold inline secrets and security tokens.
impl Drop for SourceFile {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

/// The parsed copies of inline secrets and security tokens are wiped with the raw tables (the
/// parser's own transient buffers are beyond reach).
impl Drop for RawAccessKey {
    fn drop(&mut self) {
        for v in [&mut self.secret, &mut self.security_token]
            .into_iter()
            .flatten()
        {
            v.get_mut().zeroize();
        }
    }
}

fn newline_offsets(text: &[u8]) -> impl Iterator<Item = usize> + '_ {
    text.iter()
        .enumerate()
        .filter_map(|(i, &b)| (b == b'\n').then_some(i))
}

impl SourceFile {
    fn new(name: Arc<str>, text: String, stamp: Option<FileStamp>) -> Self {
        let digest = Sha256::digest(text.as_bytes()).into();
        SourceFile {
            name,
            len: text.len(),
            text,
            digest,
            stamp,
            unread: false,
            line_starts: std::cell::OnceCell::new(),
        }
    }

    /// A file a reload did not read again, known to hold `len` bytes of digest `digest`, whose
    /// lines start at `line_starts` when known.
    fn unread(
        name: Arc<str>,
        len: usize,
        digest: [u8; 32],
        stamp: Option<FileStamp>,
        line_starts: Option<Arc<[usize]>>,
    ) -> Self {
        SourceFile {
            name,
            text: String::new(),
            len,
            digest,
            stamp,
            unread: true,
            line_starts: line_starts
                .map(std::cell::OnceCell::from)
                .unwrap_or_default(),
        }
    }

    fn line_starts(&self) -> &Arc<[usize]> {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(newline_offsets(self.text.as_bytes()).map(|p| p + 1))
                .collect()
        })
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let line_starts = self.line_starts();
        let offset = offset.min(self.len);
        // The last line start at or before `offset`; line_starts[0] == 0, so there is one.
        let line = line_starts.partition_point(|&start| start <= offset);
        let start = line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        (line, offset - start + 1)
    }

    fn origin(&self, span: Range<usize>) -> Origin {
        Origin {
            file: self.name.clone(),
            line: self.line_col(span.start).0,
        }
    }
}

/// Collects problems while compiling.
struct Diag<'a> {
    files: &'a [SourceFile],
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl<'a> Diag<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        Diag {
            files,
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn problem(&self, file: usize, span: Range<usize>, message: String) -> Problem {
        let f = &self.files[file];
        let (line, col) = f.line_col(span.start);
        Problem {
            file: f.name.to_string(),
            line,
            col,
            message,
        }
    }
    fn error(&mut self, file: usize, span: Range<usize>, message: impl Into<String>) {
        let p = self.problem(file, span, message.into());
        self.problems.push(p);
    }
    fn warn(&mut self, file: usize, span: Range<usize>, message: impl Into<String>) {
        let p = self.problem(file, span, message.into());
        self.warnings.push(p);
    }
}

/// Lists the rule files of a directory: every non-hidden `*.toml`, sorted by name. Hidden names
/// cover editor swap files and the `..data` directory of a Kubernetes ConfigMap, whose files are
/// reached through the symlinks beside it.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(rule_files_stat(dir)?
        .into_iter()
        .map(|(path, _)| path)
        .collect())
}

/// [`rule_files`], with what `stat` said of each: a reload stamps the files with it instead of
/// asking again.
fn rule_files_stat(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        // Anything else with a rule file's name (a directory, a symlink to nothing, a FIFO) fails
        // the load rather than being skipped: skipping it would load the rest of the set without
        // it, e.g. without the leaked-key flags of a `leaked.toml` replaced by a directory.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push((path, m)),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "`{name}` is not a regular file"
                )));
            }
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("`{name}`: {e}"))),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Loads and compiles every rule file in `dir`.
pub fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<Snapshot, LoadError> {
    load_dir_with(dir, opts, &CheckOptions::default())
}

/// [`load_dir`] with `check`'s options; with the default options it is `load_dir`.
pub fn load_dir_with(
    dir: &Path,
    opts: &LoadOptions,
    check: &CheckOptions,
) -> Result<Snapshot, LoadError> {
    let files = read_rule_files(dir, |_, _| None)?;
    compile(dir, &source_files(files), opts, check)
}

/// Reads the rule files of `dir` ([`rule_files`]) as `(file name, text)`, sorted by name, for
/// [`load_sources`]. Fails when there are none, or one cannot be read.
pub fn read_sources(dir: &Path) -> Result<Vec<(String, String)>, LoadError> {
    Ok(read_rule_files(dir, |_, _| None)?
        .into_iter()
        .map(|f| match f.text {
            Content::Read(text) => (f.name, text),
            // Nothing is skipped above.
            Content::Known { .. } => (f.name, String::new()),
        })
        .collect())
}

/// A rule file as a reload found it.
pub(crate) struct ReadFile {
    name: String,
    text: Content,
    stamp: Option<FileStamp>,
}

enum Content {
    Read(String),
    /// Not read: its stamp says it holds the bytes the served set read, of this length and
    /// digest ([`read_for_reload`]).
    Known {
        len: usize,
        digest: [u8; 32],
        line_starts: Option<Arc<[usize]>>,
    },
}

/// What `stat` tells of a rule file. Equal stamps, taken at two reads, mean the same bytes when
/// the first was taken well after the file's last change ([`FileStamp::settled`]): any write
/// moves the change time (which no program can set back), a replacement by rename changes the
/// inode, and a file name pointing elsewhere (a Kubernetes ConfigMap's swapped symlink) changes
/// the device or inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How long after its last change a file's stamp starts to stand for its bytes. Timestamps
/// advance in ticks (a few milliseconds on Linux filesystems), so a second write of the same
/// length within the tick of a read would leave the stamp as it was; no writer of rule files
/// rewrites one twice within two seconds of a reload without the reload after it seeing the
/// later stamp.
const STAMP_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

impl FileStamp {
    /// The stamp of `meta`, if the file last changed at least [`STAMP_SETTLE`] before `now`.
    #[cfg(unix)]
    fn settled(meta: &std::fs::Metadata, now: std::time::SystemTime) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let changed = u64::try_from(meta.ctime()).ok().and_then(|s| {
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(
                s,
                u32::try_from(meta.ctime_nsec()).ok()?,
            ))
        })?;
        // A change time in the future (a clock set back) settles nothing.
        if now.duration_since(changed).ok()? < STAMP_SETTLE {
            return None;
        }
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    /// Elsewhere a file is always read.
    #[cfg(not(unix))]
    fn settled(_meta: &std::fs::Metadata, _now: std::time::SystemTime) -> Option<FileStamp> {
        None
    }
}

/// Reads the rule files of `dir`, sorted by name, except those whose length, digest and line
/// starts (if needed) `skip` (given the name and a settled stamp) knows. Fails when there are
/// none, or one cannot be read. Each file is stamped before it is read: a write between the two
/// leaves a stamp that the next reload finds changed, never a stamp newer than the bytes.
fn read_rule_files(
    dir: &Path,
    skip: impl Fn(&str, &FileStamp) -> Option<(usize, [u8; 32], Option<Arc<[usize]>>)>,
) -> Result<Vec<ReadFile>, LoadError> {
    let whole = |message: String| LoadError {
        problems: vec![Problem {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            message,
        }],
    };
    let paths =
        rule_files_stat(dir).map_err(|e| whole(format!("cannot read the rules directory: {e}")))?;
    if paths.is_empty() {
        return Err(whole(
            "no rule files (*.toml) in the rules directory".into(),
        ));
    }
    let now = std::time::SystemTime::now();
    let mut files = Vec::with_capacity(paths.len());
    for (path, meta) in &paths {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let failed = |e: std::io::Error| LoadError {
            problems: vec![Problem {
                file: name.clone(),
                line: 0,
                col: 0,
                message: format!("cannot read: {e}"),
            }],
        };
        let stamp = FileStamp::settled(meta, now);
        if let Some((len, digest, line_starts)) = stamp.as_ref().and_then(|s| skip(&name, s)) {
            files.push(ReadFile {
                name,
                text: Content::Known {
                    len,
                    digest,
                    line_starts,
                },
                stamp,
            });
            continue;
        }
        let text = std::fs::read_to_string(path).map_err(failed)?;
        files.push(ReadFile {
            name,
            text: Content::Read(text),
            stamp,
        });
    }
    Ok(files)
}

/// The rule files of `dir` for a reload of `current`. A file whose stamp is the one taken when
/// `current` read it is not read again: the served set's compiled keys and parsed tables stand
/// for it ([`reload_sources`]), and the line starts kept with them place its diagnostics. With
/// 100k keys the key files are most of the bytes, and a reload of a small file (the leaked keys)
/// would otherwise read and hash them all; the other unchanged files cost a read and a hash each.
pub(crate) fn read_for_reload(dir: &Path, current: &Snapshot) -> Result<Vec<ReadFile>, LoadError> {
    read_rule_files(dir, |name, stamp| {
        let c = current
            .reuse
            .as_ref()?
            .files
            .iter()
            .find(|c| *c.name == *name)?;
        (c.stamp.as_ref() == Some(stamp) && (c.only_key_tables || c.line_starts.is_some()))
            .then(|| (c.len, c.digest, c.line_starts.clone()))
    })
}

/// Compiles rule files already in memory, `(file name, text)`, in the order given ([`load_dir`]
/// passes them sorted by name). `dir` is only where `secret_file`-style references are resolved
/// and what problems of the whole set are reported against; the rule files themselves are not
/// read from it. [`load_dir_with`] goes through here, so both validate identically.
pub fn load_sources(
    dir: &Path,
    sources: impl IntoIterator<Item = (String, String)>,
    opts: &LoadOptions,
    check: &CheckOptions,
) -> Result<Snapshot, LoadError> {
    let files: Vec<SourceFile> = sources
        .into_iter()
        .map(|(name, text)| SourceFile::new(name.into(), text, None))
        .collect();
    compile(dir, &files, opts, check)
}

fn source_files(files: Vec<ReadFile>) -> Vec<SourceFile> {
    files
        .into_iter()
        .map(|f| match f.text {
            Content::Read(text) => SourceFile::new(f.name.into(), text, f.stamp),
            Content::Known {
                len,
                digest,
                line_starts,
            } => SourceFile::unread(f.name.into(), len, digest, f.stamp, line_starts),
        })
        .collect()
}

/// The compiled keys of a rule set and what compiling them found: everything that depends on
/// the `[[account]]`, `[[user]]` and `[[access_key]]` tables and the outside values they name, and
/// on nothing else but the leaked flags compiled into `table` (which a [`KeyTable`] overrides
/// where they changed since).
///
/// [`KeyTable`]: super::KeyTable
pub(crate) struct KeyPart {
    table: Arc<super::KeyMap>,
    /// The leaked flags `table` was compiled with, by key id, and whether `table` holds that id.
    /// A reload compares its flags with these, a small map, instead of looking up every flagged
    /// id in `table`: with 100k keys each such lookup is a cache miss, and a thousand flagged
    /// keys made them most of a reload's time. Ids are held in place for the same reason.
    leaks: HashMap<InlineStr, CompiledLeak, IdHash>,
    /// The compiled `[[leaked_key]]` entries of each file `leaks` was compiled from; held so that
    /// an unchanged file's entries, shared with the reload's, are recognised by address.
    leak_files: Vec<Arc<[LeakEntry]>>,
    /// The flags in force that the table lacks the key of, as `leak_files[layer][entry]`: each
    /// draws a warning, which a reload repeats without looking the id up again.
    unlisted: Vec<(usize, usize)>,
    external: Arc<[ExternalInput]>,
    /// [`InputHash`]'s digest of the outside values when they were read.
    external_digest: [u8; 32],
    /// Warnings found while compiling the keys, and while counting the usable ones.
    key_warnings: Arc<WarningPart>,
    usable_warnings: Arc<WarningPart>,
    usable_keys: usize,
}

/// Where a compiled flag came from: `leak_files[layer][entry]`.
struct CompiledLeak {
    layer: usize,
    entry: usize,
    in_table: bool,
}

impl KeyPart {
    fn entry(&self, c: &CompiledLeak) -> &LeakEntry {
        &self.leak_files[c.layer][c.entry]
    }
}

/// A `[[leaked_key]]` entry, compiled once per version of its file: the file's cached tables keep
/// them, so a reload compiles only the changed files' entries.
struct LeakEntry {
    id: String,
    id_span: Range<usize>,
    info: LeakInfo,
}

fn leak_entries(i: usize, raw: &RawFile, files: &[SourceFile]) -> Arc<[LeakEntry]> {
    raw.leaked_key
        .iter()
        .map(|l| {
            let span = l.span();
            let l = l.get_ref();
            LeakEntry {
                id: l.id.get_ref().trim().to_string(),
                id_span: l.id.span(),
                info: LeakInfo {
                    reported: l.reported.as_ref().map(|d| d.to_string()),
                    reason: l.reason.clone(),
                    mode: l.mode,
                    origin: files[i].origin(span),
                },
            }
        })
        .collect()
}

/// The flag in force for a key id: the first file's that flags it (files in name order).
struct Flag<'a> {
    /// Its place among the leak entries of the files: `[layer][entry]`.
    layer: usize,
    entry: usize,
    leak: &'a LeakEntry,
}

/// Every flagged key id with the flag in force: the first file's that flags it.
fn flags_in_force(leak_files: &[Arc<[LeakEntry]>]) -> HashMap<&str, Flag<'_>, IdHash> {
    let mut leaked = HashMap::with_capacity_and_hasher(
        leak_files.iter().map(|l| l.len()).sum(),
        IdHash::default(),
    );
    for (layer, entries) in leak_files.iter().enumerate() {
        for (entry, leak) in entries.iter().enumerate() {
            // Flagging a key twice is harmless; keep the first flag's position.
            leaked
                .entry(leak.id.as_str())
                .or_insert(Flag { layer, entry, leak });
        }
    }
    leaked
}

fn not_in_table(id: &str) -> String {
    format!("leaked key `{id}` is not in the key table (no effect)")
}

/// The key ids whose leaked flag in `leak_files` (each parsed file's entries, in file order)
/// differs from the one `keys` was compiled with, each with its flag now; and, into `diag`, a
/// warning for each flagged id the key table lacks.
///
/// The files that flag something and come before the first such file that changed since the
/// keys were compiled give the flags they gave then (the first file to flag an id decides), so
/// only the entries of the files from there on are looked at: a reload after an edit of the
/// last leak file touches that file's entries and no other. Those leading files' warnings are
/// the ones found when the keys were compiled.
fn leak_changes<'a>(
    keys: &'a KeyPart,
    parsed: &[(usize, Arc<RawFile>)],
    leak_files: &'a [Arc<[LeakEntry]>],
    diag: &mut Diag<'_>,
) -> Vec<(&'a str, Option<&'a LeakInfo>)> {
    let flagging = |files: &'a [Arc<[LeakEntry]>]| -> Vec<(usize, &'a Arc<[LeakEntry]>)> {
        files
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .collect()
    };
    let now = flagging(leak_files);
    let then = flagging(&keys.leak_files);
    let same = now
        .iter()
        .zip(&then)
        .take_while(|((_, a), (_, b))| Arc::ptr_eq(a, b))
        .count();
    // For each file the keys were compiled with that is one of the leading unchanged ones,
    // its place in `parsed` now.
    let mut leading = vec![None; keys.leak_files.len()];
    for ((layer_then, _), (layer_now, _)) in then[..same].iter().zip(&now) {
        leading[*layer_then] = Some(parsed[*layer_now].0);
    }
    let from_leading = |c: &CompiledLeak| leading[c.layer].is_some();

    for &(layer, entry) in &keys.unlisted {
        if let Some(file) = leading[layer] {
            let leak = &keys.leak_files[layer][entry];
            diag.warn(file, leak.id_span.clone(), not_in_table(&leak.id));
        }
    }

    // The flags of the files from the first changed one on (those between hold none).
    let start = now.get(same).map_or(leak_files.len(), |(layer, _)| *layer);
    let flagged = flags_in_force(&leak_files[start..]);
    let mut changes = Vec::new();
    for (id, flag) in &flagged {
        let leak = flag.leak;
        let compiled = keys.leaks.get(id.as_bytes());
        if compiled.is_some_and(from_leading) {
            // An earlier, unchanged file flags it: that flag stands, and was warned about.
            continue;
        }
        // An entry of a file unchanged since the keys were compiled is the very entry they
        // were compiled with.
        let same_flag = compiled.is_some_and(|c| {
            let then = keys.entry(c);
            std::ptr::eq(then, leak) || then.info == leak.info
        });
        if !same_flag {
            changes.push((*id, Some(&leak.info)));
        }
        let in_table = match compiled {
            Some(c) => c.in_table,
            None => keys.table.contains_key(id.as_bytes()),
        };
        if !in_table {
            let file = parsed[start + flag.layer].0;
            diag.warn(file, leak.id_span.clone(), not_in_table(id));
        }
    }
    // Flags compiled from the later files that no file gives now.
    for (_, entries) in &then[same..] {
        for leak in entries.iter() {
            let id = leak.id.as_str();
            if !flagged.contains_key(id) && !keys.leaks.get(id.as_bytes()).is_some_and(from_leading)
            {
                changes.push((id, None));
            }
        }
    }
    changes
}

/// What a reload may take over from the snapshot it replaces ([`reload_sources`]): each rule
/// file's parsed tables other than the key-bearing ones (which hold inline secrets, and are large),
/// and the compiled keys.
pub struct Reuse {
    files: Vec<CachedFile>,
    keys: Arc<KeyPart>,
}

impl fmt::Debug for Reuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reuse")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

struct CachedFile {
    name: Arc<str>,
    len: usize,
    digest: [u8; 32],
    /// Taken before the bytes above were read ([`read_for_reload`]).
    stamp: Option<FileStamp>,
    /// It holds nothing but key tables: a reload that reuses the compiled keys needs none of
    /// its bytes.
    only_key_tables: bool,
    /// It holds `[[account]]`, `[[user]]` or `[[access_key]]` tables: the compiled keys depend
    /// on its bytes.
    key_tables: bool,
    /// Its parsed tables, without those.
    rest: Arc<RawFile>,
    /// Its `[[leaked_key]]` entries, compiled.
    leaks: Arc<[LeakEntry]>,
    /// Where its lines start, unless it holds only key tables (whose lines a reload that
    /// reuses the keys never asks for).
    line_starts: Option<Arc<[usize]>>,
}

fn has_key_tables(raw: &RawFile) -> bool {
    !raw.account.is_empty() || !raw.user.is_empty() || !raw.access_key.is_empty()
}

fn has_other_tables(raw: &RawFile) -> bool {
    !raw.leaked_key.is_empty()
        || !raw.service.is_empty()
        || !raw.route.is_empty()
        || !raw.critical.is_empty()
        || raw.settings.is_some()
}

fn parse_file(i: usize, f: &SourceFile, diag: &mut Diag<'_>) -> Option<RawFile> {
    match toml::from_str::<RawFile>(&f.text) {
        Ok(raw) => Some(raw),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            diag.error(i, span, e.message().trim().to_string());
            None
        }
    }
}

fn compile(
    dir: &Path,
    files: &[SourceFile],
    opts: &LoadOptions,
    check: &CheckOptions,
) -> Result<Snapshot, LoadError> {
    let mut diag = Diag::new(files);
    let mut parsed = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        if let Some(raw) = parse_file(i, f, &mut diag) {
            parsed.push((i, Arc::new(raw)));
        }
    }
    if !diag.problems.is_empty() {
        return Err(LoadError {
            problems: diag.problems,
        });
    }
    let key_tables = parsed.iter().map(|(_, raw)| has_key_tables(raw)).collect();
    let leaks = vec![None; parsed.len()];
    assemble(dir, files, parsed, key_tables, leaks, None, opts, check)
}

/// Compiles the rule files of `dir`, read into `sources`, into the snapshot that follows
/// `current` (the one being served). `Ok(None)`: the rule set is `current`'s (same files, same
/// outside values), found without parsing or compiling it.
///
/// When no file with `[[account]]`, `[[user]]` or `[[access_key]]` tables changed, appeared or
/// went, and the outside values those keys read are as they were, the new snapshot shares
/// `current`'s compiled keys and the parsed tables of its unchanged files: only the changed files
/// are parsed, and only the sets that depend on no key (leaked flags, services, critical
/// operations, routes, settings) are compiled again. Otherwise the whole set is compiled. Either
/// way the result is what [`load_sources`] gives for the same files: the same content hash,
/// keys, flags, warnings and errors.
///
/// Files [`read_for_reload`] did not read stand for the bytes `current` read; if the whole set
/// must be compiled after all, every file is read again.
pub(crate) fn reload_sources(
    dir: &Path,
    read: Vec<ReadFile>,
    current: &Snapshot,
    opts: &LoadOptions,
) -> Result<Option<Snapshot>, LoadError> {
    refuse_emptied(&read, current)?;
    let files = source_files(read);
    let external_now = external_digest_now(&current.external_inputs, opts);
    if let Some(ext) = &external_now
        && content_hash_of(files.iter().map(|f| (&*f.name, f.len, &f.digest)), ext)
            == current.content_hash
    {
        return Ok(None);
    }
    let check = CheckOptions::default();
    if let (Some(reuse), Some(ext)) = (&current.reuse, external_now)
        && ext == reuse.keys.external_digest
        && let Some(Changed {
            parsed,
            key_tables,
            leaks,
        }) = parse_changed(&files, reuse)?
    {
        return assemble(
            dir,
            &files,
            parsed,
            key_tables,
            leaks,
            Some(reuse.keys.clone()),
            opts,
            &check,
        )
        .map(Some);
    }
    if files.iter().any(|f| f.unread) {
        drop(files);
        return reload_sources(dir, read_rule_files(dir, |_, _| None)?, current, opts);
    }
    compile(dir, &files, opts, &check).map(Some)
}

/// A rule file rewritten in place (`>`, `truncate` then `write`, most editors' "write" without
/// a backup) is empty for an instant. A reload that reads it then would apply a valid set without
/// that file's rules: with `leaked.toml`, the leaked-key flags would silently go. So a rule file
/// that held something in the current set and is now zero bytes long is taken as being written:
/// the reload is refused (the current set keeps serving, and the watcher retries it on its
/// schedule, by when the file is whole). Settling and reading again could not tell a slow writer
/// from an emptied file either; refusing can be undone by the writer finishing.
///
/// To empty a rule file on purpose, delete it, or leave a comment in it (`# no leaked keys`): a
/// file that is not zero bytes long is loaded as it is. A file that was empty in the current set
/// too (or is new) is no change and is accepted.
fn refuse_emptied(read: &[ReadFile], current: &Snapshot) -> Result<(), LoadError> {
    let problems: Vec<Problem> = read
        .iter()
        .filter(|f| {
            matches!(&f.text, Content::Read(text) if text.is_empty())
                && current
                    .sources
                    .iter()
                    .any(|s| *s.name == *f.name && s.len > 0)
        })
        .map(|f| Problem {
            file: f.name.clone(),
            line: 0,
            col: 0,
            message: "empty, but not in the rules being served: taken as caught while being written (to empty a rule file on purpose, delete it or leave a comment in it)".into(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LoadError { problems })
    }
}

/// What [`parse_changed`] found, file by file (in `parsed`'s order).
struct Changed {
    parsed: Vec<(usize, Arc<RawFile>)>,
    key_tables: Vec<bool>,
    /// The compiled leak entries of the unchanged files; `None` for the changed ones.
    leaks: Vec<Option<Arc<[LeakEntry]>>>,
}

/// Every file's parsed tables: the cached ones of unchanged files, the changed ones parsed.
/// `Ok(None)` when the compiled keys cannot be reused: a file with key tables changed, appeared
/// or went. Parse errors are those a full compile reports (the unchanged files parsed).
fn parse_changed(files: &[SourceFile], reuse: &Reuse) -> Result<Option<Changed>, LoadError> {
    let cached: HashMap<&str, &CachedFile> = reuse.files.iter().map(|c| (&*c.name, c)).collect();
    let kept = |c: &CachedFile| files.iter().any(|f| f.name == c.name);
    if reuse.files.iter().any(|c| c.key_tables && !kept(c)) {
        return Ok(None);
    }
    let mut diag = Diag::new(files);
    let mut parsed = Vec::with_capacity(files.len());
    let mut key_tables = Vec::with_capacity(files.len());
    let mut leaks = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let old = cached.get(&*f.name);
        if let Some(c) = old
            && c.len == f.len
            && c.digest == f.digest
        {
            parsed.push((i, c.rest.clone()));
            key_tables.push(c.key_tables);
            leaks.push(Some(c.leaks.clone()));
            continue;
        }
        if old.is_some_and(|c| c.key_tables) {
            return Ok(None);
        }
        if let Some(raw) = parse_file(i, f, &mut diag) {
            if has_key_tables(&raw) {
                return Ok(None);
            }
            parsed.push((i, Arc::new(raw)));
            key_tables.push(false);
            leaks.push(None);
        }
    }
    if !diag.problems.is_empty() {
        return Err(LoadError {
            problems: diag.problems,
        });
    }
    Ok(Some(Changed {
        parsed,
        key_tables,
        leaks,
    }))
}

/// Compiles parsed rule files into a snapshot, with the compiled keys `keys` when given (then
/// `parsed` need not hold the key tables, and the outside values must be those `keys` read).
/// `leaks`: each file's compiled leak entries where already known (its cached ones).
#[allow(clippy::too_many_arguments)]
fn assemble(
    dir: &Path,
    files: &[SourceFile],
    parsed: Vec<(usize, Arc<RawFile>)>,
    key_tables: Vec<bool>,
    leaks: Vec<Option<Arc<[LeakEntry]>>>,
    keys: Option<Arc<KeyPart>>,
    opts: &LoadOptions,
    check: &CheckOptions,
) -> Result<Snapshot, LoadError> {
    let mut diag = Diag::new(files);

    // Settings: at most one [settings] table in the whole set.
    let mut settings_raw: Option<(usize, &Spanned<RawSettings>)> = None;
    for (i, raw) in &parsed {
        if let Some(s) = &raw.settings {
            if settings_raw.is_some() {
                diag.error(
                    *i,
                    s.span(),
                    "[settings] appears in more than one rule file",
                );
            } else {
                settings_raw = Some((*i, s));
            }
        }
    }
    let settings = compile_settings(settings_raw, &mut diag);

    // Leaked-key flags, by key id.
    let leak_files: Vec<Arc<[LeakEntry]>> = parsed
        .iter()
        .zip(leaks)
        .map(|((i, raw), known)| known.unwrap_or_else(|| leak_entries(*i, raw, files)))
        .collect();
    let keys_part = match keys {
        Some(k) => k,
        None => {
            let leaked = flags_in_force(&leak_files);
            Arc::new(compile_keys(
                dir,
                &parsed,
                &leaked,
                &leak_files,
                opts,
                check,
                &mut diag,
            ))
        }
    };
    let changes = leak_changes(&keys_part, &parsed, &leak_files, &mut diag);
    let keys = KeyTable::with_leaks(keys_part.table.clone(), changes);

    // High-risk services.
    let mut services: HashMap<String, ServiceRisk> = HashMap::new();
    for (i, raw) in &parsed {
        for s in &raw.service {
            let span = s.span();
            let s = s.get_ref();
            let name = s.name.get_ref().trim().to_ascii_lowercase();
            let mut risk = ServiceRisk {
                mode: s.mode,
                origin: Some(diag.files[*i].origin(span)),
                ..Default::default()
            };
            compile_actions(*i, &s.actions, &mut risk, &mut diag);
            if services.insert(name.clone(), risk).is_some() {
                diag.error(
                    *i,
                    s.name.span(),
                    format!("service `{name}` is declared twice; merge its actions into one entry"),
                );
            }
        }
    }

    // Critical operations: they need a second factor.
    let mut critical: HashMap<String, ServiceRisk> = HashMap::new();
    for (i, raw) in &parsed {
        for c in &raw.critical {
            let span = c.span();
            let c = c.get_ref();
            let name = c.service.get_ref().trim().to_ascii_lowercase();
            if name.is_empty() {
                diag.error(*i, c.service.span(), "[[critical]] service is empty");
                continue;
            }
            let mut ops = ServiceRisk {
                mode: c.mode,
                origin: Some(diag.files[*i].origin(span)),
                ..Default::default()
            };
            if c.actions.is_empty() {
                diag.error(
                    *i,
                    c.service.span(),
                    format!(
                        "[[critical]] `{name}` lists no actions (use [\"*\"] for every action)"
                    ),
                );
            }
            compile_actions(*i, &c.actions, &mut ops, &mut diag);
            // A misspelt service would leave its operations unprotected without a word.
            if !services.contains_key(&name) {
                diag.error(
                    *i,
                    c.service.span(),
                    format!("[[critical]] names unknown service `{name}`: declare it with a [[service]] entry (its actions may be empty)"),
                );
            }
            if critical.insert(name.clone(), ops).is_some() {
                diag.error(
                    *i,
                    c.service.span(),
                    format!(
                        "[[critical]] `{name}` appears twice; merge its actions into one entry"
                    ),
                );
            }
        }
    }

    // Routes, in file order (files sorted by name).
    let mut routes = Vec::new();
    for (i, raw) in &parsed {
        for r in &raw.route {
            let span = r.span();
            let r = r.get_ref();
            if r.host.is_none() && r.path_prefix.is_none() {
                diag.error(
                    *i,
                    span.clone(),
                    "a route needs `host`, `path_prefix` or both",
                );
            }
            let host = r.host.as_ref().map(|h| {
                let h = h.get_ref().trim();
                match h.strip_prefix('*') {
                    Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
                    None => HostMatch::Exact(h.to_ascii_lowercase()),
                }
            });
            if let (Some(HostMatch::Suffix(s)), Some(h)) = (&host, &r.host)
                && (!s.starts_with('.') || s.len() < 2)
            {
                diag.error(
                    *i,
                    h.span(),
                    "wildcard hosts must look like `*.example.com`",
                );
            }
            let path_prefix = r.path_prefix.as_ref().map(|p| p.get_ref().clone());
            if let (Some(p), Some(raw_p)) = (&path_prefix, &r.path_prefix)
                && !p.starts_with('/')
            {
                diag.error(*i, raw_p.span(), "path_prefix must start with `/`");
            }
            let service = r.service.get_ref().trim().to_ascii_lowercase();
            if !services.contains_key(&service) {
                diag.error(*i, r.service.span(), format!("route to unknown service `{service}`: declare it with a [[service]] entry (its actions may be empty)"));
            }
            let upstream = match &opts.upstream_override {
                Some(a) => Some(a.clone()),
                None => parse_upstream(r.upstream.get_ref())
                    .map_err(|m| diag.error(*i, r.upstream.span(), m))
                    .ok(),
            };
            if let Some(upstream) = upstream {
                routes.push(Route {
                    host,
                    path_prefix,
                    service,
                    family: match r.signatures.unwrap_or_default() {
                        super::raw::SignatureFamily::Alibaba => crate::auth::Family::Alibaba,
                        super::raw::SignatureFamily::Aws => crate::auth::Family::Aws,
                    },
                    upstream,
                    origin: diag.files[*i].origin(span),
                });
            }
        }
    }

    if keys.is_empty() && diag.problems.is_empty() && !check.allow_empty {
        diag.problems.push(Problem {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            message: "the rule set has no [[access_key]]: it would refuse every request".into(),
        });
    }
    if routes.is_empty() && diag.problems.is_empty() {
        diag.problems.push(Problem {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            message: "the rule set has no [[route]]: nothing could be forwarded".into(),
        });
    }
    // A set in which no key can authenticate is valid (an incident response may disable every
    // key at once) but is never what a routine edit meant: say so where it will be seen.
    let usable_keys = keys_part.usable_keys;
    let mut last = Vec::new();
    if usable_keys == 0 && diag.problems.is_empty() {
        last.push(Problem {
            file: dir.display().to_string(),
            line: 0,
            col: 0,
            message: if keys.is_empty() {
                "the rule set has no access keys: every request will be refused".into()
            } else {
                "no access key can authenticate a request (every key is disabled, or its allowlists admit no address in common): every request will be refused".into()
            },
        });
    }
    if !diag.problems.is_empty() {
        return Err(LoadError {
            problems: diag.problems,
        });
    }
    // In the order a full compile finds them: the keys', the leaked flags', the allowlists'.
    let warnings = Warnings::from_parts([
        keys_part.key_warnings.clone(),
        WarningPart::new(diag.warnings),
        keys_part.usable_warnings.clone(),
        WarningPart::new(last),
    ]);
    let content_hash = content_hash_of(
        files.iter().map(|f| (&*f.name, f.len, &f.digest)),
        &keys_part.external_digest,
    );
    // `check`'s options compile placeholder keys: never to be served, so never reused.
    let reuse = (!check.skip_secrets && !check.allow_empty)
        .then(|| reusable(files, parsed, key_tables, leak_files, keys_part.clone()))
        .flatten()
        .map(Arc::new);
    Ok(Snapshot {
        sources: files
            .iter()
            .map(|f| super::SourceInfo {
                name: f.name.clone(),
                len: f.len as u64,
            })
            .collect(),
        generation: 0,
        content_hash,
        external_inputs: keys_part.external.clone(),
        loaded_at: 0,
        settings,
        keys,
        routes,
        services,
        critical,
        warnings,
        usable_keys,
        reuse,
    })
}

/// What the next reload may take over: each file's tables without the key-bearing ones.
fn reusable(
    files: &[SourceFile],
    parsed: Vec<(usize, Arc<RawFile>)>,
    key_tables: Vec<bool>,
    leaks: Vec<Arc<[LeakEntry]>>,
    keys: Arc<KeyPart>,
) -> Option<Reuse> {
    let mut cached = Vec::with_capacity(parsed.len());
    for (((i, raw), key_tables), leaks) in parsed.into_iter().zip(key_tables).zip(leaks) {
        let rest = if has_key_tables(&raw) {
            // Held by nobody else: the compile that parsed it is over.
            let mut raw = Arc::try_unwrap(raw).ok()?;
            raw.account = Vec::new();
            raw.user = Vec::new();
            raw.access_key = Vec::new();
            Arc::new(raw)
        } else {
            raw
        };
        let f = &files[i];
        let only_key_tables = key_tables && !has_other_tables(&rest);
        cached.push(CachedFile {
            name: f.name.clone(),
            len: f.len,
            digest: f.digest,
            stamp: f.stamp,
            // An unread file has them unless it holds only key tables.
            line_starts: (!only_key_tables).then(|| f.line_starts().clone()),
            only_key_tables,
            key_tables,
            rest,
            leaks,
        });
    }
    Some(Reuse {
        files: cached,
        keys,
    })
}

/// Compiles the accounts, users and keys of `parsed`, with the leaked flags of `leaked`.
fn compile_keys(
    dir: &Path,
    parsed: &[(usize, Arc<RawFile>)],
    leaked: &HashMap<&str, Flag<'_>, IdHash>,
    leak_files: &[Arc<[LeakEntry]>],
    opts: &LoadOptions,
    check: &CheckOptions,
    diag: &mut Diag<'_>,
) -> KeyPart {
    let mut hash = InputHash::new();
    // Warnings found before are not the keys'.
    let before = std::mem::take(&mut diag.warnings);
    // Accounts.
    let mut accounts: HashMap<String, Arc<Account>> = HashMap::new();
    for (i, raw) in parsed {
        for a in &raw.account {
            let span = a.span();
            let a = a.get_ref();
            let id = a.id.get_ref().trim().to_string();
            if id.is_empty() {
                diag.error(*i, a.id.span(), "account id is empty");
                continue;
            }
            let allow = compile_cidrs(*i, &a.api_source_cidrs, diag);
            let acct = Account {
                id: id.clone(),
                name: a.name.clone(),
                allow,
                allow_mode: a.allowlist_mode,
                origin: diag.files[*i].origin(span),
            };
            if accounts.insert(id.clone(), Arc::new(acct)).is_some() {
                diag.error(*i, a.id.span(), format!("duplicate account id `{id}`"));
            }
        }
    }

    // Users, unique by (account, name).
    let mut users: HashMap<(String, String), Arc<User>> = HashMap::new();
    for (i, raw) in parsed {
        for u in &raw.user {
            let span = u.span();
            let u = u.get_ref();
            let account = u.account.get_ref().trim().to_string();
            let name = u.name.get_ref().trim().to_string();
            if name.is_empty() {
                diag.error(*i, u.name.span(), "user name is empty");
                continue;
            }
            if !accounts.contains_key(&account) {
                diag.error(
                    *i,
                    u.account.span(),
                    format!("user `{name}` refers to unknown account `{account}`"),
                );
            }
            let allow = compile_cidrs(*i, &u.api_source_cidrs, diag);
            let user = User {
                name: name.clone(),
                account: account.clone(),
                allow,
                allow_mode: u.allowlist_mode,
                origin: diag.files[*i].origin(span),
            };
            if users
                .insert((account.clone(), name.clone()), Arc::new(user))
                .is_some()
            {
                diag.error(
                    *i,
                    u.name.span(),
                    format!("duplicate user `{name}` in account `{account}`"),
                );
            }
        }
    }

    // Keys.
    // Sized once: growing a table of 100k keys rehashes and moves every entry several times.
    let mut keys = super::KeyMap::with_capacity_and_hasher(
        parsed.iter().map(|(_, raw)| raw.access_key.len()).sum(),
        super::IdHash::default(),
    );
    let mut active_per_user: HashMap<(String, String), usize> = HashMap::new();
    for (i, raw) in parsed {
        for k in &raw.access_key {
            let span = k.span();
            let k = k.get_ref();
            let id = k.id.get_ref().trim().to_string();
            if id.is_empty()
                || id
                    .bytes()
                    .any(|b| !b.is_ascii_graphic() || b == b',' || b == b'/')
            {
                diag.error(
                    *i,
                    k.id.span(),
                    "access key id must be non-empty printable ASCII without `,` or `/`",
                );
                continue;
            }
            let account_id = k.account.get_ref().trim();
            let Some(account) = accounts.get(account_id).cloned() else {
                diag.error(
                    *i,
                    k.account.span(),
                    format!("access key `{id}` refers to unknown account `{account_id}`"),
                );
                continue;
            };
            let user = match &k.user {
                None => None,
                Some(u) => {
                    let name = u.get_ref().trim().to_string();
                    match users.get(&(account_id.to_string(), name.clone())) {
                        Some(user) => Some(user.clone()),
                        None => {
                            diag.error(*i, u.span(), format!("access key `{id}` refers to unknown user `{name}` in account `{account_id}`"));
                            continue;
                        }
                    }
                }
            };
            let status = *k.status.get_ref();
            if let (Some(u), KeyStatus::Active) = (&user, status) {
                let n = active_per_user
                    .entry((account_id.to_string(), u.name.clone()))
                    .or_default();
                *n += 1;
                if *n > 2 {
                    diag.error(*i, k.id.span(), format!("user `{}` has more than two active access keys; disable one before adding another", u.name));
                }
            }
            let Some(material) = read_material(*i, k, dir, opts, check, diag, &mut hash) else {
                continue;
            };
            let Ok(temporary) = read_temporary(*i, k, dir, opts, check, diag, &mut hash) else {
                continue;
            };
            let Ok(totp) = read_totp(*i, k, dir, opts, check, diag, &mut hash) else {
                continue;
            };
            let allow = compile_cidrs(*i, &k.api_source_cidrs, diag);
            let key = AccessKey {
                id: id.clone(),
                account,
                user,
                status,
                created: k.created.as_ref().map(|d| d.to_string()),
                created_at: k.created.as_ref().and_then(date_secs),
                allow,
                allow_mode: k.allowlist_mode,
                leaked: leaked
                    .get(id.as_str())
                    .map(|f| Box::new(f.leak.info.clone())),
                material,
                temporary: temporary.map(Box::new),
                totp: totp.map(Box::new),
                sigv4_keys: Default::default(),
                origin: diag.files[*i].origin(span),
            };
            if keys.insert(InlineStr::new(&id), key).is_some() {
                diag.error(*i, k.id.span(), format!("duplicate access key id `{id}`"));
            }
        }
    }
    let key_warnings = std::mem::replace(&mut diag.warnings, before);
    let usable_keys = {
        let mut counting = Diag {
            files: diag.files,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let n = usable_keys(parsed, &mut counting);
        diag.problems.append(&mut counting.problems);
        (n, counting.warnings)
    };
    let leaks: HashMap<InlineStr, CompiledLeak, IdHash> = leaked
        .iter()
        .map(|(id, f)| {
            let flag = CompiledLeak {
                layer: f.layer,
                entry: f.entry,
                in_table: keys.contains_key(id.as_bytes()),
            };
            (InlineStr::new(id), flag)
        })
        .collect();
    let unlisted = leaks
        .values()
        .filter(|c| !c.in_table)
        .map(|c| (c.layer, c.entry))
        .collect();
    KeyPart {
        table: Arc::new(keys),
        leaks,
        leak_files: leak_files.to_vec(),
        unlisted,
        external: hash.external.into(),
        external_digest: hash.sha.finalize().into(),
        key_warnings: WarningPart::new(key_warnings),
        usable_warnings: WarningPart::new(usable_keys.1),
        usable_keys: usable_keys.0,
    }
}

/// Counts the keys that can authenticate some request: active, and admitted by some address at
/// every allowlist level that enforces a non-empty list (account, user, key). Warns about each
/// active key whose levels have no address in common. Read from the raw tables because compiled
/// allowlists cannot be intersected; keys that failed to compile make the set fail anyway.
fn usable_keys(parsed: &[(usize, Arc<RawFile>)], diag: &mut Diag<'_>) -> usize {
    use super::raw::RuleMode;
    use ipnet::IpNet;
    // `None`: the level admits every address.
    let enforced = |mode: RuleMode, cidrs: &[Spanned<String>]| -> Option<Vec<IpNet>> {
        (mode == RuleMode::Enforce && !cidrs.is_empty()).then(|| {
            cidrs
                .iter()
                .filter_map(|c| parse_cidr(c.get_ref()).ok())
                .map(canonical_net)
                .collect()
        })
    };
    // Shared, not copied, per user and key: an account may list 100k CIDRs and hold 100k keys.
    // (account, user) → that level's effective allowlist; `None` admits every address.
    type Level = Option<Arc<[IpNet]>>;
    let mut levels: HashMap<(&str, Option<&str>), Level> = HashMap::new();
    for (_, raw) in parsed {
        for a in &raw.account {
            let a = a.get_ref();
            let nets = enforced(a.allowlist_mode, &a.api_source_cidrs).map(Arc::from);
            levels.insert((a.id.get_ref().trim(), None), nets);
        }
    }
    for (_, raw) in parsed {
        for u in &raw.user {
            let u = u.get_ref();
            let account = u.account.get_ref().trim();
            let outer = levels.get(&(account, None)).cloned().flatten();
            let nets = match (outer, enforced(u.allowlist_mode, &u.api_source_cidrs)) {
                (outer, None) => outer,
                (None, Some(own)) => Some(Arc::from(own)),
                (Some(outer), Some(own)) => Some(Arc::from(intersect(&outer, &own))),
            };
            levels.insert((account, Some(u.name.get_ref().trim())), nets);
        }
    }
    let mut usable = 0;
    for (i, raw) in parsed {
        for k in &raw.access_key {
            let k = k.get_ref();
            if *k.status.get_ref() != KeyStatus::Active {
                continue;
            }
            let account = k.account.get_ref().trim();
            let user = k.user.as_ref().map(|u| u.get_ref().trim());
            let outer = levels.get(&(account, user)).and_then(|l| l.as_deref());
            let own = enforced(k.allowlist_mode, &k.api_source_cidrs);
            let nothing_in_common = match (outer, own.as_deref()) {
                (None, None) => false,
                (Some(nets), None) | (None, Some(nets)) => nets.is_empty(),
                (Some(outer), Some(own)) => intersect(outer, own).is_empty(),
            };
            if nothing_in_common {
                diag.warn(
                    *i,
                    k.id.span(),
                    format!(
                        "access key `{}`: its account, user and key allowlists have no address in common, so every request with it will be refused",
                        k.id.get_ref().trim()
                    ),
                );
            } else {
                usable += 1;
            }
        }
    }
    usable
}

/// The addresses in both lists. Two CIDRs overlap only when one holds the other, so the overlap
/// of two lists is made of the narrower of each overlapping pair. Quadratic, but only ever run on
/// a user's or a key's own list against the level above, which are short in practice.
fn intersect(a: &[ipnet::IpNet], b: &[ipnet::IpNet]) -> Vec<ipnet::IpNet> {
    a.iter()
        .flat_map(|x| {
            b.iter().filter_map(move |y| {
                if x.contains(y) {
                    Some(*y)
                } else if y.contains(x) {
                    Some(*x)
                } else {
                    None
                }
            })
        })
        .collect()
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as the IPv4 network it is, as the allowlists compare it.
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96).map_or(net, ipnet::IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// Adds an action list (`Name`, `Prefix*` or `*`) to `into`.
fn compile_actions(
    file: usize,
    actions: &[Spanned<String>],
    into: &mut ServiceRisk,
    diag: &mut Diag<'_>,
) {
    for a in actions {
        let action = a.get_ref().trim();
        if action == "*" {
            into.all = true;
        } else if let Some(prefix) = action.strip_suffix('*')
            && !prefix.is_empty()
            && !prefix.contains(['*', ' '])
        {
            into.prefixes.push(prefix.to_ascii_lowercase());
        } else if action.contains('*') {
            diag.error(
                file,
                a.span(),
                format!("`{action}`: `*` may only end an action name (`Create*`) or stand alone"),
            );
        } else if action.is_empty() || action.contains(char::is_whitespace) {
            diag.error(file, a.span(), format!("`{action}` is not an action name"));
        } else {
            into.actions.insert(action.to_ascii_lowercase());
        }
    }
}

fn compile_settings(raw: Option<(usize, &Spanned<RawSettings>)>, diag: &mut Diag<'_>) -> Settings {
    let mut s = Settings::default();
    let Some((i, raw)) = raw else { return s };
    let raw = raw.get_ref();
    let dur = |v: &Option<Spanned<String>>, into: &mut std::time::Duration, diag: &mut Diag<'_>| {
        if let Some(v) = v {
            match parse_duration(v.get_ref()) {
                Some(d) => *into = d,
                None => diag.error(
                    i,
                    v.span(),
                    format!("`{}` is not a duration (e.g. 15m, 30s, 500ms)", v.get_ref()),
                ),
            }
        }
    };
    dur(&raw.clock_skew, &mut s.clock_skew, diag);
    dur(&raw.nonce_ttl, &mut s.nonce_ttl, diag);
    dur(&raw.upstream_timeout, &mut s.upstream_timeout, diag);
    dur(
        &raw.auth_failure_cooldown,
        &mut s.auth_failure_cooldown,
        diag,
    );
    dur(&raw.mfa_trust_window, &mut s.mfa_trust_window, diag);
    if let Some(v) = &raw.mfa_trust_window
        && s.mfa_trust_window > MAX_MFA_TRUST_WINDOW
    {
        diag.error(
            i,
            v.span(),
            "mfa_trust_window may be at most 24h: a second factor vouches for a session, not a day's work",
        );
    }
    if let Some(n) = raw.auth_failure_limit {
        s.auth_failure_limit = n;
    }
    if let Some(d) = &raw.max_idle_days {
        // The cloud consoles' choices; anything else is more likely a typo (9 for 90) than a
        // policy, and a typo here disables keys.
        match *d.get_ref() {
            0 | 90 | 180 | 365 | 730 => s.max_idle_days = *d.get_ref(),
            n => diag.error(
                i,
                d.span(),
                format!("max_idle_days = {n}: use 0 (off), 90, 180, 365 or 730"),
            ),
        }
    }
    if let Some(p) = raw.unsigned_body {
        s.unsigned_body = p;
    }
    if let Some(b) = raw.max_body_bytes {
        s.max_body_bytes = b;
    }
    if let Some(tp) = &raw.trusted_proxies {
        s.trusted_proxies = compile_cidrs(i, tp, diag);
    }
    s
}

const MAX_MFA_TRUST_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn compile_cidrs(file: usize, cidrs: &[Spanned<String>], diag: &mut Diag<'_>) -> IpSet {
    let mut set = IpSet::new();
    for c in cidrs {
        match parse_cidr(c.get_ref()) {
            Ok(net) => set.insert(net),
            Err(m) => diag.error(file, c.span(), m),
        }
    }
    set
}

fn parse_upstream(s: &str) -> Result<http::uri::Authority, String> {
    let uri: http::Uri = s
        .parse()
        .map_err(|_| format!("`{s}` is not a URL (expected http://host:port)"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{s}`: only http:// upstreams are supported"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{s}`: an upstream is an origin (http://host:port); requests keep their own path"
        ));
    }
    uri.authority()
        .cloned()
        .ok_or_else(|| format!("`{s}` has no host"))
}

/// Where one text value comes from: exactly one of an environment variable, a file (relative to
/// the rules directory) or an inline string.
struct TextSource<'a> {
    what: &'static str,
    env: Option<&'a Spanned<String>>,
    file: Option<&'a Spanned<String>>,
    inline: Option<&'a Spanned<String>>,
}

/// Reads a [`TextSource`]; `None` after recording a problem.
fn read_text(
    file: usize,
    src: TextSource<'_>,
    dir: &Path,
    opts: &LoadOptions,
    diag: &mut Diag<'_>,
    hash: &mut InputHash,
) -> Option<Zeroizing<String>> {
    // Every copy of the value made here is wiped when dropped. The process environment keeps its
    // own copy of a `secret_env` value for the life of the process; that one cannot be wiped
    // without `unsafe` (`std::env::remove_var`), and a reload needs it again.
    let value = if let Some(var) = src.env {
        match (opts.env)(var.get_ref()).map(Zeroizing::new) {
            Some(v) => v,
            None => {
                diag.error(
                    file,
                    var.span(),
                    match shown_name(var.get_ref(), false) {
                        Some(name) => format!("environment variable `{name}` is not set"),
                        None => format!(
                            "environment variable is not set (its name is not shown: {NOT_A_NAME})"
                        ),
                    },
                );
                return None;
            }
        }
    } else if let Some(path) = src.file {
        match external_file_value(&dir.join(path.get_ref())) {
            Ok(v) => v,
            Err(e) => {
                let message = match shown_name(path.get_ref(), true) {
                    Some(name) => format!("cannot read {} file `{name}`: {e}", src.what),
                    None => format!(
                        "cannot read {} file: {e} (its name is not shown: {NOT_A_NAME})",
                        src.what
                    ),
                };
                diag.error(file, path.span(), message);
                return None;
            }
        }
    } else {
        Zeroizing::new(src.inline?.get_ref().clone())
    };
    // Values from outside the rule files change the rule set as much as the files do; hash them
    // (the digest reveals nothing) so that a rotated secret counts as a change.
    if src.inline.is_none() {
        let from = match (src.env, src.file) {
            (Some(var), _) => ExternalInput::Env(var.get_ref().clone()),
            (None, Some(path)) => ExternalInput::File(dir.join(path.get_ref())),
            // Inline: the rule file's bytes are hashed already.
            (None, None) => return Some(value),
        };
        hash.external(from, &value);
    }
    Some(value)
}

/// A secret, token or public-key file: a regular file of at most 64 KiB. A rule naming
/// `/dev/zero`, a FIFO or a huge file must fail the load, not hang or exhaust the reload thread.
fn read_secret_file(path: &Path) -> std::io::Result<Zeroizing<String>> {
    use std::io::Read;
    const MAX: u64 = 64 * 1024;
    // Checked before opening too: opening a FIFO for reading blocks until a writer appears.
    let not_regular =
        || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than 64 KiB",
        ));
    }
    Ok(text)
}

const NOT_A_NAME: &str = "it does not look like a name; is it the secret itself?";

/// Whether a `*_env` or `*_file` value may be repeated in an error message. Pasting the secret
/// itself where its variable's or file's name belongs is an easy slip, and the message is logged
/// and shown by `/rules` and `check`. A name is shown when each `/`-separated part looks like a
/// name: a separator (`_`, `.`, `-`), or one case and not a long mix of letters and digits.
/// `AKGATE_SECRET_CI`, `ci.secret`, `/run/secrets/ci` are shown; `kRZP3cT4xX8sGh2q1UoQ`, a hex
/// string or anything with `+` or `=` is not.
fn shown_name(value: &str, path: bool) -> Option<&str> {
    let part = |w: &str| {
        let has = |f: fn(&u8) -> bool| w.as_bytes().iter().any(f);
        let mixed_case = has(u8::is_ascii_lowercase) && has(u8::is_ascii_uppercase);
        let long_letters_and_digits =
            w.len() >= 16 && has(u8::is_ascii_digit) && has(u8::is_ascii_alphabetic);
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            && (w.contains(['_', '.', '-']) || !(mixed_case || long_letters_and_digits))
    };
    let ok = if path {
        value.split('/').filter(|p| !p.is_empty()).all(part) && value.len() > 1
    } else {
        part(value) && !value.contains(['.', '-'])
    };
    ok.then_some(value)
}

fn read_material(
    file: usize,
    k: &RawAccessKey,
    dir: &Path,
    opts: &LoadOptions,
    check: &CheckOptions,
    diag: &mut Diag<'_>,
    hash: &mut InputHash,
) -> Option<KeyMaterial> {
    let id = k.id.get_ref();
    let secret_sources = [&k.secret_env, &k.secret_file, &k.secret]
        .iter()
        .filter(|s| s.is_some())
        .count();
    let key_sources = [&k.public_key, &k.public_key_file]
        .iter()
        .filter(|s| s.is_some())
        .count();
    if secret_sources + key_sources != 1 {
        diag.error(
            file,
            k.id.span(),
            format!(
                "access key `{id}` needs exactly one of secret_env, secret_file, secret (or public_key, public_key_file for RSA keys)"
            ),
        );
        return None;
    }
    if let Some(inline) = &k.secret {
        diag.warn(
            file,
            inline.span(),
            format!("access key `{id}` has an inline secret; prefer secret_env or secret_file"),
        );
    }
    if check.skip_secrets && (k.secret_env.is_some() || k.secret_file.is_some()) {
        return Some(KeyMaterial::Secret(Box::new(Secret::new(b""))));
    }
    if check.skip_secrets && k.public_key_file.is_some() {
        return Some(KeyMaterial::RsaPublicKey(RsaPublicKey { der: Vec::new() }));
    }
    if key_sources == 1 {
        let span = k
            .public_key
            .as_ref()
            .or(k.public_key_file.as_ref())
            .map_or(k.id.span(), |s| s.span());
        let src = TextSource {
            what: "public key",
            env: None,
            file: k.public_key_file.as_ref(),
            inline: k.public_key.as_ref(),
        };
        let pem = read_text(file, src, dir, opts, diag, hash)?;
        return match rsa_public_key_from_pem(&pem) {
            Ok(der) => Some(KeyMaterial::RsaPublicKey(RsaPublicKey { der })),
            Err(m) => {
                diag.error(file, span, format!("access key `{id}`: {m}"));
                None
            }
        };
    }
    let src = TextSource {
        what: "secret",
        env: k.secret_env.as_ref(),
        file: k.secret_file.as_ref(),
        inline: k.secret.as_ref(),
    };
    let value = read_text(file, src, dir, opts, diag, hash)?;
    if value.is_empty() {
        diag.error(
            file,
            k.id.span(),
            format!("access key `{id}` has an empty secret"),
        );
        return None;
    }
    Some(KeyMaterial::Secret(Box::new(Secret::new(value.as_bytes()))))
}

/// The temporary-credential part of a key; `Err(())` after recording a problem.
fn read_temporary(
    file: usize,
    k: &RawAccessKey,
    dir: &Path,
    opts: &LoadOptions,
    check: &CheckOptions,
    diag: &mut Diag<'_>,
    hash: &mut InputHash,
) -> Result<Option<Temporary>, ()> {
    let id = k.id.get_ref();
    let token_sources = [
        &k.security_token_env,
        &k.security_token_file,
        &k.security_token,
    ]
    .iter()
    .filter(|s| s.is_some())
    .count();
    if !k.temporary {
        if token_sources > 0 || k.expires.is_some() {
            diag.error(
                file,
                k.id.span(),
                format!(
                    "access key `{id}` has a security token or expiry but not `temporary = true`"
                ),
            );
            return Err(());
        }
        return Ok(None);
    }
    let Some(expires) = &k.expires else {
        diag.error(
            file,
            k.id.span(),
            format!("temporary access key `{id}` needs `expires` (e.g. 2026-12-01T00:00:00Z)"),
        );
        return Err(());
    };
    let Some(expires_at) = datetime_secs(expires.get_ref()) else {
        diag.error(
            file,
            expires.span(),
            "`expires` must be a date-time with an offset, e.g. 2026-12-01T00:00:00Z",
        );
        return Err(());
    };
    if token_sources != 1 {
        diag.error(
            file,
            k.id.span(),
            format!("temporary access key `{id}` needs exactly one of security_token_env, security_token_file, security_token"),
        );
        return Err(());
    }
    let src = TextSource {
        what: "security token",
        env: k.security_token_env.as_ref(),
        file: k.security_token_file.as_ref(),
        inline: k.security_token.as_ref(),
    };
    // Only the token's digest is kept; it never needs to be shown or forwarded by the gateway.
    let skipped =
        check.skip_secrets && (k.security_token_env.is_some() || k.security_token_file.is_some());
    let token = if skipped {
        Zeroizing::new(String::new())
    } else {
        // Hashed like a secret: a rotated token is a change to apply, not `unchanged`.
        read_text(file, src, dir, opts, diag, hash).ok_or(())?
    };
    Ok(Some(Temporary {
        expires: expires_at,
        token_sha256: Sha256::digest(token.as_bytes()).into(),
    }))
}

/// The key's TOTP seed, if it has one; `Err(())` after recording a problem. The seed's text is
/// wiped once decoded, and no message quotes it.
fn read_totp(
    file: usize,
    k: &RawAccessKey,
    dir: &Path,
    opts: &LoadOptions,
    check: &CheckOptions,
    diag: &mut Diag<'_>,
    hash: &mut InputHash,
) -> Result<Option<TotpSeed>, ()> {
    let id = k.id.get_ref();
    let (env, path) = (k.totp_secret_env.as_ref(), k.totp_secret_file.as_ref());
    let Some(span) = env.or(path).map(|s| s.span()) else {
        return Ok(None);
    };
    if env.is_some() && path.is_some() {
        diag.error(
            file,
            span,
            format!("access key `{id}` needs at most one of totp_secret_env, totp_secret_file"),
        );
        return Err(());
    }
    if check.skip_secrets {
        return Ok(Some(TotpSeed::from_bytes(b"")));
    }
    let src = TextSource {
        what: "TOTP seed",
        env,
        file: path,
        inline: None,
    };
    let text = read_text(file, src, dir, opts, diag, hash).ok_or(())?;
    match TotpSeed::from_base32(&text) {
        Ok(seed) => Ok(Some(seed)),
        Err(e) => {
            diag.error(file, span, format!("access key `{id}`: {e}"));
            Err(())
        }
    }
}

/// A TOML offset date-time as Unix seconds; `None` for local (offset-less) values.
pub fn datetime_secs(d: &toml::value::Datetime) -> Option<i64> {
    let (date, time, offset) = (d.date?, d.time?, d.offset?);
    let minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = crate::time::days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let secs = i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0));
    Some(days * 86400 + secs - minutes * 60)
}

/// A TOML date or date-time as Unix seconds, read as UTC when it carries no offset (a `created`
/// date is a day, not an instant; the hours do not matter for idle days).
fn date_secs(d: &toml::value::Datetime) -> Option<i64> {
    let date = d.date?;
    let days = crate::time::days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    Some(match d.time {
        Some(_) if d.offset.is_some() => datetime_secs(d)?,
        _ => days * 86400,
    })
}

/// Extracts the PKCS#1 `RSAPublicKey` from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
fn rsa_public_key_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::SubjectPublicKeyInfoDer;
    use rustls::pki_types::pem::PemObject;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("public key is not a PEM `PUBLIC KEY`: {e}"))?;
    crate::auth::der::rsa_public_key_from_spki(spki.as_ref())
        .ok_or_else(|| "public key is not an RSA key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleMode;

    #[test]
    fn secret_files_must_be_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.secret");
        std::fs::write(&ok, "s3cr3t\n").unwrap();
        assert_eq!(&*read_secret_file(&ok).unwrap(), "s3cr3t\n");
        let big = dir.path().join("big.secret");
        std::fs::write(&big, vec![b'a'; 64 * 1024 + 1]).unwrap();
        assert!(read_secret_file(&big).is_err());
        assert!(read_secret_file(dir.path()).is_err());
        assert!(read_secret_file(Path::new("/dev/zero")).is_err());
    }

    #[test]
    fn line_and_column_of_offsets() {
        let f = SourceFile::new("t.toml".into(), "ab\n\ncd\nef".into(), None);
        let at = |o| f.line_col(o);
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(1), (1, 2));
        assert_eq!(at(2), (1, 3)); // the newline itself
        assert_eq!(at(3), (2, 1)); // the empty line
        assert_eq!(at(4), (3, 1));
        assert_eq!(at(8), (4, 2));
        assert_eq!(at(99), (4, 3)); // past the end: clamped
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const KEYS: &str = r#"
[[account]]
id = "1001"
api_source_cidrs = ["203.0.113.0/24"]

[[user]]
name = "ci"
account = "1001"

[[access_key]]
id = "AK1"
user = "ci"
account = "1001"
secret = "s1"
status = "active"
created = 2026-01-15
"#;
    const ROUTES: &str = r#"
[[service]]
name = "ecs"
actions = ["DeleteInstance"]

[[route]]
path_prefix = "/"
service = "ecs"
upstream = "http://127.0.0.1:9000"
"#;

    #[test]
    fn loads_a_valid_set() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "keys.toml", KEYS);
        write(d.path(), "routes.toml", ROUTES);
        let s = load_dir(d.path(), &LoadOptions::default()).unwrap();
        let k = s.key("AK1").unwrap();
        assert_eq!(k.account.id, "1001");
        assert_eq!(k.user.as_ref().unwrap().name, "ci");
        assert_eq!(k.origin.to_string(), "keys.toml:10");
        assert!(s.service("ecs").unwrap().is_high_risk("deleteinstance"));
        assert_eq!(s.warnings.len(), 1, "inline secret warns");
    }

    #[test]
    fn reports_every_problem_with_position() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "keys.toml",
            &KEYS
                .replace("203.0.113.0/24", "203.0.113.0/33")
                .replace("user = \"ci\"\naccount", "user = \"nobody\"\naccount"),
        );
        write(
            d.path(),
            "routes.toml",
            &ROUTES.replace("service = \"ecs\"\nupstream", "service = \"oss\"\nupstream"),
        );
        let e = load_dir(d.path(), &LoadOptions::default()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("keys.toml:4:21: `203.0.113.0/33` is not an IP network"),
            "{text}"
        );
        assert!(
            text.contains("keys.toml:12:8: access key `AK1` refers to unknown user `nobody`"),
            "{text}"
        );
        assert!(
            text.contains("routes.toml:8:11: route to unknown service `oss`"),
            "{text}"
        );
    }

    #[test]
    fn max_idle_days_takes_the_consoles_values_only() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "keys.toml", KEYS);
        write(d.path(), "routes.toml", ROUTES);
        for (n, ok) in [
            (0, true),
            (90, true),
            (730, true),
            (9, false),
            (1000, false),
        ] {
            write(
                d.path(),
                "settings.toml",
                &format!("[settings]\nmax_idle_days = {n}\n"),
            );
            match load_dir(d.path(), &LoadOptions::default()) {
                Ok(s) => {
                    assert!(ok, "{n} loaded");
                    assert_eq!(s.settings.max_idle_days, n);
                }
                Err(e) => {
                    assert!(!ok, "{n}: {e}");
                    let text = e.to_string();
                    assert!(
                        text.contains("settings.toml:2:17: max_idle_days ="),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_fields_and_syntax_errors_name_the_place() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "keys.toml",
            &KEYS.replace("created =", "colour = \"red\"\ncreated ="),
        );
        write(d.path(), "routes.toml", ROUTES);
        let e = load_dir(d.path(), &LoadOptions::default()).unwrap_err();
        assert_eq!(e.problems[0].file, "keys.toml");
        assert_eq!(e.problems[0].line, 16);
        assert!(e.problems[0].message.contains("colour"), "{e}");

        write(d.path(), "keys.toml", "[[access_key]\nid = 1");
        let e = load_dir(d.path(), &LoadOptions::default()).unwrap_err();
        assert_eq!(
            (e.problems[0].file.as_str(), e.problems[0].line),
            ("keys.toml", 1)
        );
    }

    #[test]
    fn secrets_from_env_and_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "routes.toml", ROUTES);
        write(d.path(), "k.secret", "from-file\n");
        write(
            d.path(),
            "keys.toml",
            &KEYS.replace("secret = \"s1\"", "secret_file = \"k.secret\""),
        );
        let s = load_dir(d.path(), &LoadOptions::default()).unwrap();
        assert!(s.warnings.is_empty());
        write(
            d.path(),
            "keys.toml",
            &KEYS.replace("secret = \"s1\"", "secret_env = \"AKGATE_TEST_NOPE\""),
        );
        let e = load_dir(
            d.path(),
            &LoadOptions {
                env: Arc::new(|_| None),
                upstream_override: None,
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("`AKGATE_TEST_NOPE` is not set"),
            "{e}"
        );
        let ok = LoadOptions {
            env: Arc::new(|n| (n == "AKGATE_TEST_NOPE").then(|| "x".into())),
            upstream_override: None,
        };
        assert!(load_dir(d.path(), &ok).is_ok());
        let e = load_dir(&d.path().join("missing"), &ok).unwrap_err();
        assert!(e.to_string().contains("cannot read the rules directory"));
    }

    #[test]
    fn the_content_hash_is_recomputed_without_compiling_and_sees_every_outside_value() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "routes.toml", ROUTES);
        write(d.path(), "k.secret", "from-file\n");
        write(d.path(), "k.token", "token-1\n");
        write(d.path(), "ci.totp", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n");
        let keys = KEYS.replace(
            "secret = \"s1\"",
            "secret_file = \"k.secret\"\ntotp_secret_file = \"ci.totp\"",
        ) + "\n[[access_key]]\nid = \"AK2\"\naccount = \"1001\"\nsecret_env = \"AKGATE_TEST_AK2\"\nstatus = \"active\"\ntemporary = true\nexpires = 2030-01-01T00:00:00Z\nsecurity_token_file = \"k.token\"\n";
        write(d.path(), "keys.toml", &keys);
        let value = Arc::new(std::sync::Mutex::new("env-1".to_string()));
        let v = value.clone();
        let opts = LoadOptions {
            env: Arc::new(move |n| (n == "AKGATE_TEST_AK2").then(|| v.lock().unwrap().clone())),
            upstream_override: None,
        };
        let now = |s: &Snapshot| {
            let sources = read_sources(d.path()).unwrap();
            content_hash_now(&sources, &s.external_inputs, &opts)
        };
        let s = load_dir(d.path(), &opts).unwrap();
        assert_eq!(s.external_inputs.len(), 4, "{:?}", s.external_inputs);
        assert_eq!(now(&s).as_deref(), Some(s.content_hash.as_str()));
        // Each outside value, changed, changes the hash, and the compiled set agrees.
        let changes: [(&str, &str); 3] = [
            ("k.secret", "rotated\n"),
            ("k.token", "token-2\n"),
            ("ci.totp", "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJR\n"),
        ];
        let mut before = s;
        for (file, text) in changes {
            write(d.path(), file, text);
            let h = now(&before).unwrap();
            assert_ne!(h, before.content_hash, "{file}");
            let after = load_dir(d.path(), &opts).unwrap();
            assert_eq!(h, after.content_hash, "{file}");
            before = after;
        }
        *value.lock().unwrap() = "env-2".into();
        assert_ne!(
            now(&before).unwrap(),
            before.content_hash,
            "environment value"
        );
        // So does a rule file's byte, and an outside value that cannot be read gives no answer.
        write(d.path(), "routes.toml", &format!("{ROUTES}\n"));
        assert_ne!(now(&before).unwrap(), before.content_hash);
        std::fs::remove_file(d.path().join("k.token")).unwrap();
        assert_eq!(now(&before), None);
    }

    #[test]
    fn at_most_two_active_keys_per_user() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "routes.toml", ROUTES);
        let mut keys = KEYS.to_string();
        for n in 2..=3 {
            keys.push_str(&format!("\n[[access_key]]\nid = \"AK{n}\"\nuser = \"ci\"\naccount = \"1001\"\nsecret = \"s\"\nstatus = \"active\"\n"));
        }
        write(d.path(), "keys.toml", &keys);
        let e = load_dir(d.path(), &LoadOptions::default()).unwrap_err();
        assert!(
            e.to_string().contains("more than two active access keys"),
            "{e}"
        );
        write(
            d.path(),
            "keys.toml",
            &keys.replacen("status = \"active\"\n", "status = \"disabled\"\n", 2),
        );
        assert!(load_dir(d.path(), &LoadOptions::default()).is_ok());
    }

    fn refuse_all_warnings(s: &Snapshot) -> Vec<&Problem> {
        s.warnings
            .iter()
            .filter(|w| w.message.contains("every request will be refused"))
            .collect()
    }

    #[test]
    fn a_set_in_which_no_key_can_be_used_loads_with_a_warning() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "routes.toml", ROUTES);
        let load = |keys: &str| {
            write(d.path(), "keys.toml", keys);
            load_dir(d.path(), &LoadOptions::default()).unwrap()
        };
        let s = load(KEYS);
        assert_eq!(s.usable_keys, 1);
        assert!(refuse_all_warnings(&s).is_empty(), "{:?}", s.warnings);

        let s = load(&KEYS.replace("status = \"active\"", "status = \"disabled\""));
        assert_eq!(s.usable_keys, 0);
        let w = refuse_all_warnings(&s);
        assert_eq!(w.len(), 1, "{:?}", s.warnings);
        assert!(w[0].message.contains("every key is disabled"), "{}", w[0]);

        // The key's allowlist and its account's have no address in common.
        let with_key_cidrs = |c: &str| {
            KEYS.replace(
                "status = \"active\"",
                &format!("status = \"active\"\napi_source_cidrs = [{c}]"),
            )
        };
        let s = load(&with_key_cidrs("\"198.51.100.0/24\", \"2001:db8::/32\""));
        assert_eq!(s.usable_keys, 0);
        let key = s
            .warnings
            .iter()
            .find(|w| w.message.contains("no address in common"))
            .expect("a warning on the key");
        assert_eq!((key.file.as_str(), key.line), ("keys.toml", 11), "{key}");
        assert!(key.message.contains("`AK1`"), "{key}");
        assert_eq!(refuse_all_warnings(&s).len(), 1, "{:?}", s.warnings);

        // Overlapping in either direction, or through an IPv4-mapped IPv6 network: usable.
        for cidrs in [
            "\"203.0.113.7\"",
            "\"203.0.0.0/16\"",
            "\"10.0.0.0/8\", \"203.0.113.128/25\"",
            "\"::ffff:203.0.113.0/120\"",
        ] {
            let s = load(&with_key_cidrs(cidrs));
            assert_eq!(s.usable_keys, 1, "{cidrs}: {:?}", s.warnings);
            assert!(
                refuse_all_warnings(&s).is_empty(),
                "{cidrs}: {:?}",
                s.warnings
            );
        }
        // A level in shadow mode refuses nothing.
        let shadow = with_key_cidrs("\"198.51.100.0/24\"").replace(
            "api_source_cidrs = [\"203.0.113.0/24\"]",
            "api_source_cidrs = [\"203.0.113.0/24\"]\nallowlist_mode = \"shadow\"",
        );
        assert_eq!(load(&shadow).usable_keys, 1);
        // Through the user's allowlist.
        let user = KEYS.replace(
            "name = \"ci\"\naccount = \"1001\"",
            "name = \"ci\"\naccount = \"1001\"\napi_source_cidrs = [\"192.0.2.0/24\"]",
        );
        assert_eq!(load(&user).usable_keys, 0);
    }

    #[test]
    fn a_directory_or_dangling_link_named_like_a_rule_file_fails_the_load() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "keys.toml", KEYS);
        write(d.path(), "routes.toml", ROUTES);
        assert!(load_dir(d.path(), &LoadOptions::default()).is_ok());
        std::fs::create_dir(d.path().join("leaked.toml")).unwrap();
        let e = load_dir(d.path(), &LoadOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("`leaked.toml` is not a regular file"),
            "{e}"
        );
        std::fs::remove_dir(d.path().join("leaked.toml")).unwrap();
        std::os::unix::fs::symlink(d.path().join("gone"), d.path().join("leaked.toml")).unwrap();
        let e = load_dir(d.path(), &LoadOptions::default()).unwrap_err();
        assert!(e.to_string().contains("`leaked.toml`"), "{e}");
    }

    #[test]
    fn critical_operations_and_totp_seeds() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "routes.toml", ROUTES);
        // `12345678901234567890` in base32, spaced as apps show it, no padding.
        write(
            d.path(),
            "ci.totp",
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ\n",
        );
        let keys = KEYS.replace(
            "status = \"active\"",
            "status = \"active\"\ntotp_secret_file = \"ci.totp\"",
        );
        write(d.path(), "keys.toml", &keys);
        let critical = "\n[[critical]]\nservice = \"ECS\"\nactions = [\"DeleteInstance\", \"Modify*\"]\nmode = \"shadow\"\n";
        write(d.path(), "critical.toml", critical);
        write(
            d.path(),
            "settings.toml",
            "[settings]\nmfa_trust_window = \"2m\"\n",
        );
        let s = load_dir(d.path(), &LoadOptions::default()).unwrap();
        let ops = s.critical("ecs").unwrap();
        assert!(ops.is_high_risk("deleteinstance") && ops.is_high_risk("ModifyInstanceSpec"));
        assert!(!ops.is_high_risk("DescribeInstances"));
        assert_eq!(ops.mode, RuleMode::Shadow);
        assert_eq!(ops.origin.as_ref().unwrap().to_string(), "critical.toml:2");
        assert_eq!(s.settings.mfa_trust_window.as_secs(), 120);
        let seed = s.key("AK1").unwrap().totp.as_ref().unwrap();
        assert_eq!(seed.code_at(59, 8), "94287082", "RFC 6238's seed");

        // The default window.
        std::fs::remove_file(d.path().join("settings.toml")).unwrap();
        let s = load_dir(d.path(), &LoadOptions::default()).unwrap();
        assert_eq!(s.settings.mfa_trust_window.as_secs(), 15 * 60);

        // Each mistake is refused with its place, and never quotes a seed.
        let cases: [(&str, &str, &str, &str); 7] = [
            (
                "critical.toml",
                "\n[[critical]]\nservice = \"ecs\"\nactions = [\"X\"]\ncolour = 1\n",
                "critical.toml:5",
                "colour",
            ),
            (
                "critical.toml",
                "\n[[critical]]\nservice = \"ecss\"\nactions = [\"X\"]\n",
                "critical.toml:3",
                "unknown service `ecss`",
            ),
            (
                "critical.toml",
                "[[critical]]\nservice = \"ecs\"\nactions = [\"A\"]\n[[critical]]\nservice = \"ecs\"\nactions = [\"B\"]\n",
                "critical.toml:5",
                "appears twice",
            ),
            (
                "critical.toml",
                "[[critical]]\nservice = \"ecs\"\nactions = [\"De*lete\"]\n",
                "critical.toml:3",
                "`*` may only end",
            ),
            (
                "settings.toml",
                "[settings]\nmfa_trust_window = \"2d\"\n",
                "settings.toml:2",
                "at most 24h",
            ),
            (
                "ci.totp",
                "GEZDGNBVGY3TQOJ1GEZDGNBVGY3TQOJQ\n",
                "keys.toml:",
                "not base32",
            ),
            (
                "keys.toml",
                &keys.replace(
                    "totp_secret_file = \"ci.totp\"",
                    "totp_secret_file = \"ci.totp\"\ntotp_secret_env = \"AKGATE_TEST_TOTP\"",
                ),
                "keys.toml:",
                "at most one of totp_secret_env, totp_secret_file",
            ),
        ];
        for (file, text, at, what) in cases {
            let saved = std::fs::read_to_string(d.path().join(file)).ok();
            write(d.path(), file, text);
            let e = load_dir(d.path(), &LoadOptions::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(at) && e.contains(what), "{file}: {e}");
            assert!(!e.contains("GEZD"), "{e}");
            match saved {
                Some(t) => write(d.path(), file, &t),
                None => std::fs::remove_file(d.path().join(file)).unwrap(),
            }
        }
        write(
            d.path(),
            "keys.toml",
            &keys.replace(
                "totp_secret_file = \"ci.totp\"",
                "totp_secret_env = \"AKGATE_TEST_TOTP\"",
            ),
        );
        let e = load_dir(
            d.path(),
            &LoadOptions {
                env: Arc::new(|_| None),
                upstream_override: None,
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("`AKGATE_TEST_TOTP` is not set"),
            "{e}"
        );
    }

    #[test]
    fn names_that_look_like_secrets_are_not_repeated() {
        for name in ["AKGATE_SECRET_CI", "ci_secret", "SECRET", "secret2"] {
            assert_eq!(shown_name(name, false), Some(name));
        }
        for path in ["bob.secret", "/run/secrets/ci", "keys/ci-key.txt", "CI"] {
            assert_eq!(shown_name(path, true), Some(path));
        }
        for secret in [
            "kRZP3cT4xX8sGh2q1UoQ9ZlD5mN7wA",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "9f86d081884c7d659a2feaa0c55ad015",
            "abc+def=",
        ] {
            assert_eq!(shown_name(secret, false), None, "{secret}");
            assert_eq!(shown_name(secret, true), None, "{secret}");
        }
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "routes.toml", ROUTES);
        for field in ["secret_env", "secret_file"] {
            write(
                d.path(),
                "keys.toml",
                &KEYS.replace(
                    "secret = \"s1\"",
                    &format!("{field} = \"kRZP3cT4xX8sGh2q1UoQ9ZlD5mN7wA\""),
                ),
            );
            let opts = LoadOptions {
                env: Arc::new(|_| None),
                upstream_override: None,
            };
            let e = load_dir(d.path(), &opts).unwrap_err().to_string();
            assert!(e.contains("is it the secret itself?"), "{e}");
            assert!(!e.contains("kRZP3cT4"), "{e}");
        }
    }

    /// Each rule file a reload of `current` would find, and whether it would read it.
    fn reads(dir: &Path, current: &Snapshot) -> Vec<(String, bool)> {
        read_for_reload(dir, current)
            .unwrap()
            .into_iter()
            .map(|f| (f.name, matches!(f.text, Content::Read(_))))
            .collect()
    }

    fn reload(dir: &Path, current: &Snapshot) -> Option<Snapshot> {
        let opts = LoadOptions::default();
        reload_sources(dir, read_for_reload(dir, current).unwrap(), current, &opts).unwrap()
    }

    fn admits(snap: &Snapshot, ip: &str) -> bool {
        let ip = crate::policy::allowlist::canonical_ip(ip.parse().unwrap());
        snap.key("AK1").unwrap().account.allow.contains(ip)
    }

    #[test]
    fn a_reload_reads_a_settled_key_file_again_only_once_it_changed() {
        let opts = LoadOptions::default();
        let (accounts, keys) = KEYS.split_at(KEYS.find("[[user]]").unwrap());
        // Keys in files of their own, split in two, as large deployments keep them.
        let split = tempfile::tempdir().unwrap();
        write(split.path(), "accounts.toml", accounts);
        write(split.path(), "keys.toml", keys);
        // A flag that draws a warning, placed by line and column.
        write(
            split.path(),
            "leaked.toml",
            "# none of ours\n\n[[leaked_key]]\nid = \"AKNOPE\"\n",
        );
        write(split.path(), "routes.toml", ROUTES);
        // Keys and routes in one file.
        let single = tempfile::tempdir().unwrap();
        write(single.path(), "rules.toml", &format!("{KEYS}{ROUTES}"));

        // Just written: a stamp cannot stand for the bytes yet, so every file is read.
        let fresh = load_dir(split.path(), &opts).unwrap();
        assert!(reads(split.path(), &fresh).iter().all(|(_, read)| *read));

        std::thread::sleep(STAMP_SETTLE + std::time::Duration::from_millis(200));
        let current = load_dir(split.path(), &opts).unwrap();
        let read_only = |name: &str| -> Vec<(String, bool)> {
            ["accounts.toml", "keys.toml", "leaked.toml", "routes.toml"]
                .into_iter()
                .map(|f| (f.to_string(), f == name))
                .collect()
        };
        assert_eq!(reads(split.path(), &current), read_only("none"));
        assert!(reload(split.path(), &current).is_none(), "nothing changed");
        // A file that holds more than keys is not read again either: its parsed tables are kept.
        let one = load_dir(single.path(), &opts).unwrap();
        assert_eq!(
            reads(single.path(), &one),
            vec![("rules.toml".to_string(), false)]
        );

        // The routes edited: the reload reads that file only, reuses the keys and the other
        // files' tables, and its result is what a full load of the directory gives, down to
        // where the warning in the unread `leaked.toml` points.
        write(split.path(), "routes.toml", &ROUTES.replace("9000", "9001"));
        assert_eq!(reads(split.path(), &current), read_only("routes.toml"));
        let next = reload(split.path(), &current).expect("routes changed");
        let full = load_dir(split.path(), &opts).unwrap();
        assert_eq!(next.content_hash, full.content_hash);
        assert_ne!(next.content_hash, current.content_hash);
        let leak_warning = |s: &Snapshot| -> Vec<(usize, usize, String)> {
            s.warnings
                .iter()
                .filter(|w| w.file == "leaked.toml")
                .map(|w| (w.line, w.col, w.message.clone()))
                .collect()
        };
        assert_eq!(leak_warning(&full).len(), 1);
        assert_eq!((leak_warning(&full)[0].0, leak_warning(&full)[0].1), (4, 6));
        assert_eq!(leak_warning(&next), leak_warning(&full));
        assert_eq!(
            reads(split.path(), &next),
            read_only("routes.toml"),
            "stamps carried over; the edited file is read until it settles"
        );
        assert!(admits(&next, "203.0.113.200"));

        // An account's allowlist narrowed by a rewrite in place of the same length: the file's
        // change time moved, so it is read, and the keys file (unread) is read for the full
        // compile that a changed key file calls for.
        let narrowed = accounts.replace("203.0.113.0/24", "203.0.113.0/25");
        assert_eq!(narrowed.len(), accounts.len());
        std::fs::OpenOptions::new()
            .write(true)
            .open(split.path().join("accounts.toml"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, narrowed.as_bytes()))
            .unwrap();
        assert_eq!(
            reads(split.path(), &next),
            vec![
                ("accounts.toml".to_string(), true),
                ("keys.toml".to_string(), false),
                ("leaked.toml".to_string(), false),
                ("routes.toml".to_string(), true),
            ]
        );
        let after = reload(split.path(), &next).expect("an allowlist changed");
        assert!(
            !admits(&after, "203.0.113.200"),
            "the narrowed allowlist is in force"
        );
        assert!(admits(&after, "203.0.113.100"));
        assert_eq!(
            after.content_hash,
            load_dir(split.path(), &opts).unwrap().content_hash
        );
    }
}
