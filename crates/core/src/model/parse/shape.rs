//! The shape of one document's text, measured before the YAML parser sees it: how deeply its
//! collections nest and how many nodes it holds, so a document of absurd nesting is refused in
//! linear time instead of after minutes inside the parser.
//!
//! Why a scan of our own: serde_yaml 0.9 parses with unsafe-libyaml (libyaml translated to
//! Rust), whose scanner looks at every open flow level (`[` or `{`) for each token it reads, so
//! a document of `n` nested flow collections costs time quadratic in `n`, all of it spent
//! before serde_yaml's recursion limit (128) can refuse it: 100,000 levels of `{a: ` take
//! seconds in a release build and minutes in a debug one. The parser offers no hook to stop
//! earlier, so this scan follows libyaml's tokenizer (`yaml_parser_fetch_next_token` and the
//! `scan_*` functions it calls) far enough to know where tokens start and end: which `[`, `{`,
//! `-`, `?` and `:` are indicators and which are text inside a comment, a quoted scalar, a
//! block scalar or a plain scalar. It tracks what the scanner tracks for nesting (the flow
//! level and the stack of block indentations) and stops at the first token past a limit, or
//! where libyaml's scanner would fail (the parser then reports that error itself).
//!
//! The depth it measures is that of the collections the parser will build: flow collections,
//! block collections (one per indentation the scanner opens) and block sequences written at
//! their key's own indentation (`key:\n- item`). Aliases are not followed here: the reader
//! (`bounded.rs`) bounds the depth and size of what they expand to.
//!
//! The node count is a lower bound of the nodes the parser will build: every scalar, alias and
//! collection it can see in the text, but not the empty nodes YAML allows (`key:` with nothing
//! after it), so a count past the limit always means more nodes than the limit.

/// How far a document may go.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Collections inside one another.
    pub depth: usize,
    /// Scalars, aliases and collections.
    pub nodes: usize,
}

/// Why the scan refused a document. `line` is 1-based within the scanned text: where the
/// limit was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    TooDeep { line: usize },
    TooManyNodes { line: usize },
}

/// Scans `text` (one document) and refuses it at the first token past `limits`.
pub(super) fn check(text: &str, limits: Limits) -> Result<(), Refusal> {
    let mut scanner = Scanner::new(text.as_bytes(), limits);
    match scanner.run() {
        Stop::Refused(refusal) => Err(refusal),
        // The parser reports a syntax error in its own words; the scan has no opinion.
        Stop::End | Stop::SyntaxError => Ok(()),
    }
}

/// How many lines `text` spans before its end, counted as libyaml counts them (`\r\n`, `\r`,
/// `\n`, NEL, LS and PS each end a line): to turn a line of a document into a line of the
/// whole input.
pub(super) fn line_breaks(text: &str) -> usize {
    let mut cursor = Cursor::new(text.as_bytes());
    let mut lines = 0;
    while !cursor.at_end() {
        if cursor.is_break(0) {
            cursor.skip_line();
            lines += 1;
        } else {
            cursor.skip();
        }
    }
    lines
}

/// Why the scan ended.
enum Stop {
    /// The whole text was scanned within the limits.
    End,
    /// libyaml's scanner would fail here; the parser will refuse the document.
    SyntaxError,
    Refused(Refusal),
}

/// A position in the text, counted as libyaml counts it: `index` and `column` in characters,
/// `line` from 0.
struct Cursor<'t> {
    text: &'t [u8],
    at: usize,
    index: usize,
    line: usize,
    column: usize,
}

impl<'t> Cursor<'t> {
    fn new(text: &'t [u8]) -> Self {
        Cursor {
            text,
            at: 0,
            index: 0,
            line: 0,
            column: 0,
        }
    }

    /// The byte `offset` bytes ahead; 0 past the end (libyaml's buffer ends in NUL bytes).
    fn byte(&self, offset: usize) -> u8 {
        self.text.get(self.at + offset).copied().unwrap_or(0)
    }

    fn check(&self, offset: usize, byte: u8) -> bool {
        self.byte(offset) == byte
    }

    /// The end of the text, or a NUL (which libyaml's reader refuses: nothing after it counts).
    fn at_end(&self) -> bool {
        self.byte(0) == 0
    }

    fn is_blank(&self, offset: usize) -> bool {
        matches!(self.byte(offset), b' ' | b'\t')
    }

    /// `\r`, `\n`, NEL (C2 85), LS (E2 80 A8) or PS (E2 80 A9) at `offset` bytes ahead.
    fn is_break(&self, offset: usize) -> bool {
        match self.byte(offset) {
            b'\r' | b'\n' => true,
            0xC2 => self.byte(offset + 1) == 0x85,
            0xE2 => self.byte(offset + 1) == 0x80 && matches!(self.byte(offset + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    fn is_breakz(&self, offset: usize) -> bool {
        self.is_break(offset) || self.byte(offset) == 0
    }

    fn is_blankz(&self, offset: usize) -> bool {
        self.is_blank(offset) || self.is_breakz(offset)
    }

    /// libyaml's IS_ALPHA: the characters of anchor names and tag handles.
    fn is_alpha(&self, offset: usize) -> bool {
        matches!(self.byte(offset), b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'-')
    }

    /// `---` or `...` at the start of a line, followed by a blank or the end of the line.
    fn at_document_indicator(&self) -> bool {
        self.column == 0
            && ((self.check(0, b'-') && self.check(1, b'-') && self.check(2, b'-'))
                || (self.check(0, b'.') && self.check(1, b'.') && self.check(2, b'.')))
            && self.is_blankz(3)
    }

    /// Moves past one character.
    fn skip(&mut self) {
        let width = match self.byte(0) {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            // Not the first byte of a character (the text is UTF-8, so not reached); move on.
            _ => 1,
        };
        self.at = (self.at + width).min(self.text.len());
        self.index += 1;
        self.column += 1;
    }

    /// Moves past one line break (`\r\n` is one).
    fn skip_line(&mut self) {
        if self.check(0, b'\r') && self.check(1, b'\n') {
            self.at += 2;
            self.index += 2;
            self.column = 0;
            self.line += 1;
        } else if self.is_break(0) {
            self.skip();
            self.column = 0;
            self.line += 1;
        }
    }
}

/// A place where a simple key (`key: value` without `?`) may have started: libyaml's
/// `yaml_simple_key_t`, without the token number the scan has no use for.
#[derive(Clone, Copy)]
struct SimpleKey {
    possible: bool,
    required: bool,
    /// The deepest node read since the key started: what it holds.
    peak: usize,
    index: usize,
    line: usize,
    column: usize,
}

const NO_KEY: SimpleKey = SimpleKey {
    possible: false,
    required: false,
    peak: 0,
    index: 0,
    line: 0,
    column: 0,
};

/// How far a simple key may run before it is stale: libyaml's limit of 1024 characters.
const SIMPLE_KEY_REACH: usize = 1024;

/// One block collection the scanner opened (one entry of libyaml's indentation stack).
struct Block {
    /// The indentation before it (its own is the next entry's, or the scanner's current one).
    indent: isize,
    /// Opened by a `-` entry, not by a key.
    sequence: bool,
    /// A block mapping whose value is a sequence written at the mapping's own indentation
    /// (`key:\n- item`): libyaml opens no indentation for it, but the parser nests it.
    indentless_sequence: bool,
}

/// One open flow collection.
struct Flow {
    /// `[`, not `{`.
    sequence: bool,
    /// It holds a `key: value` pair directly, which the parser makes a mapping of its own.
    pair: bool,
}

struct Scanner<'t> {
    cursor: Cursor<'t>,
    limits: Limits,
    flow_level: usize,
    /// One per open flow collection.
    flows: Vec<Flow>,
    /// Open single-pair mappings among `flows`: they count as a level each.
    pairs: usize,
    /// The current block indentation, -1 before any block collection.
    indent: isize,
    blocks: Vec<Block>,
    /// Open indentless sequences among `blocks`: they count as a level each.
    indentless: usize,
    /// One per flow level and one for the block context: a flow collection may itself be a
    /// key.
    simple_keys: Vec<SimpleKey>,
    simple_key_allowed: bool,
    nodes: usize,
    /// The deepest nesting seen so far.
    max_depth: usize,
}

impl<'t> Scanner<'t> {
    fn new(text: &'t [u8], limits: Limits) -> Self {
        Scanner {
            cursor: Cursor::new(text),
            limits,
            flow_level: 0,
            flows: Vec::new(),
            pairs: 0,
            indent: -1,
            blocks: Vec::new(),
            indentless: 0,
            simple_keys: vec![NO_KEY],
            // libyaml allows a simple key at the start of the stream.
            simple_key_allowed: true,
            nodes: 0,
            max_depth: 0,
        }
    }

    fn depth(&self) -> usize {
        self.flow_level + self.pairs + self.blocks.len() + self.indentless
    }

    fn line(&self) -> usize {
        self.cursor.line + 1
    }

    /// Counts one node, refusing past the limits (nesting first: the rarer, clearer cause).
    fn node(&mut self) -> Result<(), Stop> {
        let depth = self.depth();
        // Every key still open holds this node (at most one per level: a bounded loop).
        for key in &mut self.simple_keys {
            if key.possible {
                key.peak = key.peak.max(depth);
            }
        }
        self.reached(depth)?;
        self.nodes += 1;
        if self.nodes > self.limits.nodes {
            return Err(Stop::Refused(Refusal::TooManyNodes { line: self.line() }));
        }
        Ok(())
    }

    /// Notes that the document nests `depth` deep here, refusing it past the limit.
    fn reached(&mut self, depth: usize) -> Result<(), Stop> {
        self.max_depth = self.max_depth.max(depth);
        if depth > self.limits.depth {
            return Err(Stop::Refused(Refusal::TooDeep { line: self.line() }));
        }
        Ok(())
    }

    fn run(&mut self) -> Stop {
        loop {
            match self.next_token() {
                Ok(true) => {}
                Ok(false) => return Stop::End,
                Err(stop) => return stop,
            }
        }
    }

    /// libyaml's `yaml_parser_fetch_next_token`: moves past one token; false at the end.
    fn next_token(&mut self) -> Result<bool, Stop> {
        self.scan_to_next_token();
        self.stale_simple_keys()?;
        self.unroll_indent(self.cursor.column as isize);
        let c = &self.cursor;
        if c.at_end() {
            return Ok(false);
        }
        let flow = self.flow_level > 0;
        let byte = c.byte(0);
        if c.column == 0 && byte == b'%' {
            // A directive: the parser allows it only before `---`; its line holds no node.
            self.end_block_context()?;
            while !self.cursor.is_breakz(0) {
                self.cursor.skip();
            }
            return Ok(true);
        }
        if c.at_document_indicator() {
            self.end_block_context()?;
            for _ in 0..3 {
                self.cursor.skip();
            }
            return Ok(true);
        }
        match byte {
            b'[' | b'{' => self.flow_collection_start()?,
            b']' | b'}' => self.flow_collection_end()?,
            b',' => {
                self.close_pair();
                self.remove_simple_key()?;
                self.simple_key_allowed = true;
                self.cursor.skip();
            }
            b'-' if c.is_blankz(1) => self.block_entry()?,
            b'?' if flow || c.is_blankz(1) => self.key_indicator(flow)?,
            b':' if flow || c.is_blankz(1) => self.value()?,
            b'*' | b'&' => {
                self.save_simple_key()?;
                self.simple_key_allowed = false;
                self.anchor()?;
                if byte == b'*' {
                    self.node()?;
                }
            }
            b'!' => {
                self.save_simple_key()?;
                self.simple_key_allowed = false;
                self.tag()?;
            }
            b'|' | b'>' if !flow => {
                self.remove_simple_key()?;
                self.simple_key_allowed = true;
                self.node()?;
                self.block_scalar()?;
            }
            b'\'' | b'"' => {
                self.save_simple_key()?;
                self.simple_key_allowed = false;
                self.node()?;
                self.quoted_scalar(byte == b'\'')?;
            }
            _ if self.starts_plain_scalar() => {
                self.save_simple_key()?;
                self.simple_key_allowed = false;
                self.node()?;
                self.plain_scalar()?;
            }
            // "found character that cannot start any token".
            _ => return Err(Stop::SyntaxError),
        }
        Ok(true)
    }

    /// Before a directive or a document indicator: every block collection ends, and no
    /// simple key may span it.
    fn end_block_context(&mut self) -> Result<(), Stop> {
        self.unroll_indent(-1);
        self.remove_simple_key()?;
        self.simple_key_allowed = false;
        Ok(())
    }

    /// `]` or `}`: the innermost flow collection ends (outside any, it is only skipped).
    fn flow_collection_end(&mut self) -> Result<(), Stop> {
        self.remove_simple_key()?;
        if self.flow_level > 0 {
            self.close_pair();
            self.flow_level -= 1;
            self.flows.pop();
            self.simple_keys.pop();
        }
        self.simple_key_allowed = false;
        self.cursor.skip();
        Ok(())
    }

    /// `?`: an explicit key, opening a pair in flow context or a key in a block mapping.
    fn key_indicator(&mut self, flow: bool) -> Result<(), Stop> {
        if flow {
            self.open_pair()?;
        } else {
            if !self.simple_key_allowed {
                return Err(Stop::SyntaxError);
            }
            self.key_at(self.cursor.column as isize)?;
        }
        self.remove_simple_key()?;
        self.simple_key_allowed = !flow;
        self.cursor.skip();
        Ok(())
    }

    /// Whether the character under the cursor starts a plain scalar (libyaml's test).
    fn starts_plain_scalar(&self) -> bool {
        let c = &self.cursor;
        let byte = c.byte(0);
        let indicator = matches!(
            byte,
            b'-' | b'?'
                | b':'
                | b','
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'#'
                | b'&'
                | b'*'
                | b'!'
                | b'|'
                | b'>'
                | b'\''
                | b'"'
                | b'%'
                | b'@'
                | b'`'
        );
        !(c.is_blankz(0) || indicator)
            || (byte == b'-' && !c.is_blank(1))
            || (self.flow_level == 0 && matches!(byte, b'?' | b':') && !c.is_blankz(1))
    }

    /// Skips blanks, comments and line breaks up to the next token.
    fn scan_to_next_token(&mut self) {
        loop {
            let c = &mut self.cursor;
            if c.column == 0 && c.check(0, 0xEF) && c.check(1, 0xBB) && c.check(2, 0xBF) {
                c.skip();
            }
            // Tabs separate tokens only where they cannot be taken for indentation.
            while c.check(0, b' ')
                || ((self.flow_level > 0 || !self.simple_key_allowed) && c.check(0, b'\t'))
            {
                c.skip();
            }
            if c.check(0, b'#') {
                while !c.is_breakz(0) {
                    c.skip();
                }
            }
            if !c.is_break(0) {
                return;
            }
            c.skip_line();
            if self.flow_level == 0 {
                self.simple_key_allowed = true;
            }
        }
    }

    /// A simple key must end on its line, within 1024 characters; past that it is no key.
    fn stale_simple_keys(&mut self) -> Result<(), Stop> {
        let (index, line) = (self.cursor.index, self.cursor.line);
        for key in &mut self.simple_keys {
            if key.possible && (key.line < line || key.index + SIMPLE_KEY_REACH < index) {
                if key.required {
                    // "could not find expected ':'".
                    return Err(Stop::SyntaxError);
                }
                key.possible = false;
            }
        }
        Ok(())
    }

    fn save_simple_key(&mut self) -> Result<(), Stop> {
        if self.simple_key_allowed {
            let required = self.flow_level == 0 && self.indent == self.cursor.column as isize;
            self.remove_simple_key()?;
            let key = SimpleKey {
                possible: true,
                required,
                peak: self.depth(),
                index: self.cursor.index,
                line: self.cursor.line,
                column: self.cursor.column,
            };
            if let Some(top) = self.simple_keys.last_mut() {
                *top = key;
            }
        }
        Ok(())
    }

    fn remove_simple_key(&mut self) -> Result<(), Stop> {
        if let Some(top) = self.simple_keys.last_mut() {
            if top.possible && top.required {
                return Err(Stop::SyntaxError);
            }
            top.possible = false;
        }
        Ok(())
    }

    /// Opens a block collection at `column` if it is deeper than the current indentation (in
    /// the block context only).
    fn roll_indent(&mut self, column: isize, sequence: bool) -> Result<bool, Stop> {
        if self.flow_level > 0 || self.indent >= column {
            return Ok(false);
        }
        self.blocks.push(Block {
            indent: self.indent,
            sequence,
            indentless_sequence: false,
        });
        self.indent = column;
        self.node()?;
        Ok(true)
    }

    /// Closes the block collections deeper than `column` (in the block context only).
    fn unroll_indent(&mut self, column: isize) {
        if self.flow_level > 0 {
            return;
        }
        while self.indent > column {
            match self.blocks.pop() {
                Some(block) => {
                    if block.indentless_sequence {
                        self.indentless -= 1;
                    }
                    self.indent = block.indent;
                }
                None => break,
            }
        }
    }

    /// A key at a mapping's own indentation ends the indentless sequence that was the value
    /// of its previous key.
    fn end_indentless_sequence(&mut self) {
        if let Some(top) = self.blocks.last_mut() {
            if top.indentless_sequence {
                top.indentless_sequence = false;
                self.indentless -= 1;
            }
        }
    }

    fn flow_collection_start(&mut self) -> Result<(), Stop> {
        self.save_simple_key()?;
        self.flow_level += 1;
        self.flows.push(Flow {
            sequence: self.cursor.check(0, b'['),
            pair: false,
        });
        self.simple_keys.push(NO_KEY);
        self.simple_key_allowed = true;
        self.node()?;
        self.cursor.skip();
        Ok(())
    }

    /// `- ` (a block sequence entry).
    fn block_entry(&mut self) -> Result<(), Stop> {
        if self.flow_level == 0 {
            if !self.simple_key_allowed {
                // "block sequence entries are not allowed in this context".
                return Err(Stop::SyntaxError);
            }
            let column = self.cursor.column as isize;
            if self.indent < column {
                self.roll_indent(column, true)?;
            } else if self.indent == column {
                // A sequence at its mapping's indentation: one level for the parser, opened by
                // its first entry.
                if let Some(top) = self.blocks.last_mut() {
                    if !top.sequence && !top.indentless_sequence {
                        top.indentless_sequence = true;
                        self.indentless += 1;
                        self.node()?;
                    }
                }
            }
        }
        self.remove_simple_key()?;
        self.simple_key_allowed = true;
        self.cursor.skip();
        Ok(())
    }

    /// `:` (a mapping value): the simple key before it, if any, opens a block mapping at its
    /// own column.
    fn value(&mut self) -> Result<(), Stop> {
        let flow = self.flow_level > 0;
        let key = self.simple_keys.last().copied().unwrap_or(NO_KEY);
        if key.possible {
            let opened = if flow {
                self.open_pair()?
            } else {
                self.key_at(key.column as isize)?
            };
            if opened {
                // The key was read before the mapping it opens: what it holds (`[a]: b`) is
                // one level deeper than counted then.
                self.reached(key.peak + 1)?;
            }
            if let Some(top) = self.simple_keys.last_mut() {
                top.possible = false;
            }
            self.simple_key_allowed = false;
        } else {
            if !flow {
                if !self.simple_key_allowed {
                    // "mapping values are not allowed in this context".
                    return Err(Stop::SyntaxError);
                }
                let column = self.cursor.column as isize;
                self.key_at(column)?;
            }
            self.simple_key_allowed = !flow;
        }
        self.cursor.skip();
        Ok(())
    }

    /// A key at `column` in the block context: it opens a mapping there, or, at the current
    /// indentation, ends the indentless sequence that was its mapping's previous value.
    /// Returns whether it opened a mapping.
    fn key_at(&mut self, column: isize) -> Result<bool, Stop> {
        if self.indent == column {
            self.end_indentless_sequence();
        }
        self.roll_indent(column, false)
    }

    /// A key directly in a flow sequence (`[a: b]`, `[? a]`): the parser wraps the pair in a
    /// mapping of its own, until the next `,` or `]`. Returns whether it opened one.
    fn open_pair(&mut self) -> Result<bool, Stop> {
        match self.flows.last_mut() {
            Some(flow) if flow.sequence && !flow.pair => {
                flow.pair = true;
                self.pairs += 1;
                self.node()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The end of a flow entry (`,`, `]` or `}`) ends the pair it was.
    fn close_pair(&mut self) {
        if let Some(flow) = self.flows.last_mut() {
            if flow.pair {
                flow.pair = false;
                self.pairs -= 1;
            }
        }
    }

    /// `&name` or `*name`.
    fn anchor(&mut self) -> Result<(), Stop> {
        self.cursor.skip();
        let mut length = 0;
        while self.cursor.is_alpha(0) {
            self.cursor.skip();
            length += 1;
        }
        let c = &self.cursor;
        let ends = c.is_blankz(0)
            || matches!(
                c.byte(0),
                b'?' | b':' | b',' | b']' | b'}' | b'%' | b'@' | b'`'
            );
        if length == 0 || !ends {
            return Err(Stop::SyntaxError);
        }
        Ok(())
    }

    /// `!tag`, `!handle!suffix` or `!<verbatim>`.
    fn tag(&mut self) -> Result<(), Stop> {
        let verbatim = self.cursor.check(1, b'<');
        self.cursor.skip();
        if verbatim {
            self.cursor.skip();
        }
        while self.is_uri_char(verbatim) {
            self.cursor.skip();
        }
        if verbatim {
            if !self.cursor.check(0, b'>') {
                return Err(Stop::SyntaxError);
            }
            self.cursor.skip();
        }
        let c = &self.cursor;
        if c.is_blankz(0) || (self.flow_level > 0 && c.check(0, b',')) {
            Ok(())
        } else {
            // "did not find expected whitespace or line break".
            Err(Stop::SyntaxError)
        }
    }

    /// The characters of a tag (libyaml's `scan_tag_uri`; a handle's are a subset).
    fn is_uri_char(&self, verbatim: bool) -> bool {
        let c = &self.cursor;
        c.is_alpha(0)
            || matches!(
                c.byte(0),
                b';' | b'/'
                    | b'?'
                    | b':'
                    | b'@'
                    | b'&'
                    | b'='
                    | b'+'
                    | b'$'
                    | b'.'
                    | b'%'
                    | b'!'
                    | b'~'
                    | b'*'
                    | b'\''
                    | b'('
                    | b')'
            )
            || (verbatim && matches!(c.byte(0), b',' | b'[' | b']'))
    }

    /// `|` or `>`: the header, then every line indented at least as far as the first one.
    fn block_scalar(&mut self) -> Result<(), Stop> {
        let c = &mut self.cursor;
        c.skip();
        let mut increment = 0;
        if matches!(c.byte(0), b'+' | b'-') {
            c.skip();
            if c.byte(0).is_ascii_digit() {
                if c.check(0, b'0') {
                    return Err(Stop::SyntaxError);
                }
                increment = isize::from(c.byte(0) - b'0');
                c.skip();
            }
        } else if c.byte(0).is_ascii_digit() {
            if c.check(0, b'0') {
                return Err(Stop::SyntaxError);
            }
            increment = isize::from(c.byte(0) - b'0');
            c.skip();
            if matches!(c.byte(0), b'+' | b'-') {
                c.skip();
            }
        }
        while c.is_blank(0) {
            c.skip();
        }
        if c.check(0, b'#') {
            while !c.is_breakz(0) {
                c.skip();
            }
        }
        if !c.is_breakz(0) {
            // "did not find expected comment or line break".
            return Err(Stop::SyntaxError);
        }
        c.skip_line();
        let mut indent = if increment == 0 {
            0
        } else if self.indent >= 0 {
            self.indent + increment
        } else {
            increment
        };
        self.block_scalar_breaks(&mut indent)?;
        while self.cursor.column as isize == indent && !self.cursor.at_end() {
            while !self.cursor.is_breakz(0) {
                self.cursor.skip();
            }
            self.cursor.skip_line();
            self.block_scalar_breaks(&mut indent)?;
        }
        Ok(())
    }

    /// Skips a block scalar's indentation and empty lines; on the first call without an
    /// explicit indentation, sets it from the first non-empty line.
    fn block_scalar_breaks(&mut self, indent: &mut isize) -> Result<(), Stop> {
        let mut max_indent = 0;
        loop {
            let c = &mut self.cursor;
            while (*indent == 0 || (c.column as isize) < *indent) && c.check(0, b' ') {
                c.skip();
            }
            max_indent = max_indent.max(c.column as isize);
            if (*indent == 0 || (c.column as isize) < *indent) && c.check(0, b'\t') {
                // "found a tab character where an indentation space is expected".
                return Err(Stop::SyntaxError);
            }
            if !c.is_break(0) {
                break;
            }
            c.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
        Ok(())
    }

    /// `'...'` (`''` is a quote) or `"..."` (`\` escapes the next character, or a line
    /// break); either may span lines.
    fn quoted_scalar(&mut self, single: bool) -> Result<(), Stop> {
        let quote = if single { b'\'' } else { b'"' };
        let c = &mut self.cursor;
        c.skip();
        loop {
            if c.at_document_indicator() || c.at_end() {
                // "found unexpected document indicator" / "found unexpected end of stream".
                return Err(Stop::SyntaxError);
            }
            if c.is_break(0) {
                c.skip_line();
            } else if single && c.check(0, b'\'') && c.check(1, b'\'') {
                c.skip();
                c.skip();
            } else if c.check(0, quote) {
                c.skip();
                return Ok(());
            } else if !single && c.check(0, b'\\') {
                c.skip();
                if c.is_break(0) {
                    c.skip_line();
                } else if !c.at_end() {
                    c.skip();
                }
            } else {
                c.skip();
            }
        }
    }

    /// A plain scalar: to `: `, ` #`, a flow indicator in a flow collection, or (in the block
    /// context) a line indented no further than its collection.
    fn plain_scalar(&mut self) -> Result<(), Stop> {
        let flow = self.flow_level > 0;
        let indent = self.indent + 1;
        let mut leading_blanks = false;
        loop {
            let c = &mut self.cursor;
            if c.at_document_indicator() || c.check(0, b'#') {
                break;
            }
            while !c.is_blankz(0) {
                let byte = c.byte(0);
                if flow
                    && byte == b':'
                    && matches!(c.byte(1), b',' | b'?' | b'[' | b']' | b'{' | b'}')
                {
                    // "found unexpected ':'".
                    return Err(Stop::SyntaxError);
                }
                if (byte == b':' && c.is_blankz(1))
                    || (flow && matches!(byte, b',' | b'[' | b']' | b'{' | b'}'))
                {
                    break;
                }
                leading_blanks = false;
                c.skip();
            }
            if !(c.is_blank(0) || c.is_break(0)) {
                break;
            }
            while c.is_blank(0) || c.is_break(0) {
                if c.is_blank(0) {
                    if leading_blanks && (c.column as isize) < indent && c.check(0, b'\t') {
                        // "found a tab character that violates indentation".
                        return Err(Stop::SyntaxError);
                    }
                    c.skip();
                } else {
                    c.skip_line();
                    leading_blanks = true;
                }
            }
            if !flow && (c.column as isize) < indent {
                break;
            }
        }
        if leading_blanks {
            self.simple_key_allowed = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_yaml::{Mapping, Value};

    use super::*;

    /// The deepest nesting and the node count the scan sees in `text`, without limits; `None`
    /// when libyaml's scanner would fail.
    fn measure(text: &str) -> Option<(usize, usize)> {
        let limits = Limits {
            depth: usize::MAX,
            nodes: usize::MAX,
        };
        let mut scanner = Scanner::new(text.as_bytes(), limits);
        match scanner.run() {
            Stop::End => Some((scanner.max_depth, scanner.nodes)),
            Stop::SyntaxError | Stop::Refused(_) => None,
        }
    }

    /// The nesting and node count of a parsed value.
    fn value_shape(value: &Value) -> (usize, usize) {
        match value {
            Value::Sequence(items) => items.iter().fold((1, 1), |(depth, nodes), item| {
                let (d, n) = value_shape(item);
                (depth.max(d + 1), nodes + n)
            }),
            Value::Mapping(mapping) => mapping.iter().fold((1, 1), |(depth, nodes), (k, v)| {
                let (kd, kn) = value_shape(k);
                let (vd, vn) = value_shape(v);
                (depth.max(kd + 1).max(vd + 1), nodes + kn + vn)
            }),
            Value::Tagged(tagged) => value_shape(&tagged.value),
            _ => (0, 1),
        }
    }

    fn limits(depth: usize, nodes: usize) -> Limits {
        Limits { depth, nodes }
    }

    #[test]
    fn flow_and_block_nesting_are_measured_as_the_parser_nests() {
        let cases = [
            ("a: 1\n", (1, 3)),
            ("[[[x]]]", (3, 4)),
            ("{a: {b: [1, 2]}}", (3, 7)),
            ("- - - x\n", (3, 4)),
            ("a:\n  b:\n    c: d\n", (3, 7)),
            // A sequence at its key's indentation is a level of its own.
            ("a:\n- b: 1\n- c\nd: e\n", (3, 9)),
            ("- a:\n  - b\n", (3, 5)),
            ("&a [&b [*a]]", (2, 3)),
            ("!t [!t {x: !t y}]", (2, 4)),
            ("? [a]\n: b\n", (2, 4)),
            ("[a, b]: c\n", (2, 5)),
            ("a: |\n  [[[[\n  {{{{\nb: >-\n   - - -\n", (1, 5)),
            ("a: '[[''[['\nb: \"[[\\\"[[\"\n", (1, 5)),
            ("a: b # [[[[\n# {{{{\n", (1, 3)),
            ("a: b[[[[\n  c{{{{\n", (1, 3)),
            ("[a#b, c]\n", (1, 3)),
            ("[\"a\nb[[\", 'c\n]]']\n", (1, 3)),
            ("a: x:y\n", (1, 3)),
            ("[http://x, a:b]\n", (1, 3)),
            ("--- [[a]]\n", (2, 3)),
        ];
        for (text, expected) in cases {
            assert_eq!(measure(text), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn brackets_in_comments_quotes_and_block_scalars_do_not_nest() {
        let deep = "[".repeat(100_000);
        for text in [
            format!("# {deep}\na: 1\n"),
            format!("a: 1 # {deep}\n"),
            format!("a: '{deep}'\n"),
            format!("a: \"{deep}\"\n"),
            format!("a: |\n  {deep}\n  {deep}\n"),
            format!("a: >\n  {deep}\n"),
            format!("a: x{deep}\n"),
        ] {
            assert_eq!(check(&text, limits(32, 100)), Ok(()), "{}", &text[..20]);
        }
    }

    #[test]
    fn deep_nesting_is_refused_at_the_line_that_passes_the_limit() {
        assert_eq!(
            check("a:\n  [[[[x]]]]\n", limits(4, 100)),
            Err(Refusal::TooDeep { line: 2 })
        );
        assert_eq!(check("a:\n  [[[x]]]\n", limits(4, 100)), Ok(()));
        let block: String = (0..10)
            .map(|level| format!("{}a:\n", " ".repeat(level)))
            .collect();
        assert_eq!(
            check(&block, limits(5, 100)),
            Err(Refusal::TooDeep { line: 6 })
        );
        assert_eq!(
            check(
                &format!("{}x", "- ".repeat(100_000)),
                limits(32, usize::MAX)
            ),
            Err(Refusal::TooDeep { line: 1 })
        );
        // Block sequences, then flow collections inside them.
        assert_eq!(
            check(
                &format!("{}{}", "- ".repeat(20), "[{a: ".repeat(10)),
                limits(32, 1000)
            ),
            Err(Refusal::TooDeep { line: 1 })
        );
    }

    #[test]
    fn too_many_nodes_are_refused() {
        let text = format!("[{}]", vec!["a"; 100].join(", "));
        assert_eq!(check(&text, limits(32, 101)), Ok(()));
        assert_eq!(
            check(&text, limits(32, 100)),
            Err(Refusal::TooManyNodes { line: 1 })
        );
    }

    #[test]
    fn where_libyaml_fails_the_scan_stops_and_leaves_the_error_to_the_parser() {
        for text in [
            "a: b: [[[[[[[[[[",
            "'unterminated [[[[[[[[[[",
            "a:\n\t[[[[[[[[[[",
            "- a\nb [[[[[[[[[[",
        ] {
            assert_eq!(check(text, limits(4, 100)), Ok(()), "{text:?}");
            assert!(
                serde_yaml::from_str::<Value>(text).is_err(),
                "{text:?} is not YAML"
            );
        }
    }

    #[test]
    fn line_breaks_are_counted_as_libyaml_counts_them() {
        assert_eq!(line_breaks(""), 0);
        assert_eq!(line_breaks("a\nb\r\nc\rd\u{85}e\u{2028}f\u{2029}"), 6);
    }

    /// Any value: scalars whose text is full of YAML indicators, in nested lists and mappings.
    fn any_value() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            "[\\[\\]{}#&*!|>'\"%@`,:?\\- \\\\\na-z\t\r]{0,12}".prop_map(Value::String),
        ];
        scalar.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
                prop::collection::vec(("[a-z\\[{#:' -]{0,6}", inner), 0..6).prop_map(|entries| {
                    Value::Mapping(
                        entries
                            .into_iter()
                            .map(|(key, value)| (Value::String(key), value))
                            .collect::<Mapping>(),
                    )
                }),
            ]
        })
    }

    /// What the texts of the next test are made of: YAML's indicators, blanks, line breaks and
    /// a few letters.
    const PIECES: [&str; 25] = [
        "[", "]", "{", "}", ",", ":", "?", "-", "#", "!", "|", ">", "'", "\"", "\\", " ", "  ",
        "\n", "\t", "\r\n", "a", "b", "- ", ": ", "\n  ",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(std::env::var("SHAPE_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)))]

        /// On any text the parser reads (aliases aside: the reader bounds what they expand
        /// to), the scan sees the nesting the parser builds, and no more nodes than it builds.
        #[test]
        fn the_scan_never_underestimates_what_the_parser_builds(
            pieces in prop::collection::vec(prop::sample::select(PIECES.to_vec()), 0..40)
        ) {
            let text = pieces.concat();
            if let Ok(value) = serde_yaml::from_str::<Value>(&text) {
                let (depth, nodes) = value_shape(&value);
                let measured = measure(&text);
                prop_assert!(measured.is_some(), "the scan saw an error in {:?}", text);
                let (measured_depth, measured_nodes) = measured.unwrap_or_default();
                prop_assert_eq!(measured_depth, depth, "{:?} is {:?}", text, value);
                prop_assert!(measured_nodes <= nodes, "{:?} is {:?}", text, value);
            }
        }

        /// The scan sees the nesting and nodes the parser builds, in YAML as serde_yaml prints
        /// it (block style, quoted and block scalars) and in JSON (flow style).
        #[test]
        fn the_scan_measures_what_the_parser_builds(value in any_value()) {
            let (depth, nodes) = value_shape(&value);
            let yaml = serde_yaml::to_string(&value).expect("a value prints as YAML");
            let back: Option<Value> = serde_yaml::from_str(&yaml).ok();
            prop_assert_eq!(back, Some(value.clone()));
            prop_assert_eq!(measure(&yaml), Some((depth, nodes)), "{}", yaml);
            let json = serde_json::to_string(&value).expect("a value prints as JSON");
            prop_assert_eq!(measure(&json), Some((depth, nodes)), "{}", json);
        }
    }
}
