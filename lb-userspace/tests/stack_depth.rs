//! The XDP object's BPF-to-BPF call chains fit the BPF stack as the oldest kernel xlb
//! supports counts it, read from the object file alone (no root, no kernel).
//!
//! The verifier adds up the stack frames of every chain of BPF-to-BPF calls and refuses a
//! program whose deepest chain passes 512 bytes (`check_max_stack_depth` in
//! kernel/bpf/verifier.c). Linux 6.1 rounds every frame up to a multiple of 32, and an
//! empty one to 32 (the interpreter's granularity), JIT or not; since 6.9 a JITed program's
//! frames are rounded to 16 only. So an object that newer kernels take can be refused by
//! 6.1: this test applies 6.1's rule, the stricter one.
//!
//! A function's frame is the deepest byte below r10 it touches: loads and stores relative
//! to r10 or to a register holding r10 plus a constant, and any such pointer it makes (a
//! pointer handed to a helper or a callee points into this frame). The call graph comes
//! from the BPF_PSEUDO_CALL instructions, resolved in the section or through relocations.

use std::collections::HashMap;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

/// The verifier's limit for a whole call chain (MAX_BPF_STACK).
const MAX_STACK: u32 = 512;
/// The verifier's limit on frames in a chain (MAX_CALL_FRAMES).
const MAX_FRAMES: usize = 8;

const INSN: usize = 8;
const R10: usize = 10;

// Instruction classes and fields (include/uapi/linux/bpf.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;
const SRC_X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_SUB: u8 = 0x10;
const OP_MOV: u8 = 0xb0;
const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
const LD_IMM64: u8 = 0x18;
const PSEUDO_CALL: u8 = 1;

/// How a kernel rounds each frame of a chain before adding them up.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Linux up to 6.8: up to a multiple of 32, at least 32.
    Linux6_1,
    /// Linux 6.9 and later with the JIT on: up to a multiple of 16.
    Linux6_9Jit,
}

impl Rule {
    fn round(self, depth: u32) -> u32 {
        match self {
            Rule::Linux6_1 => depth.max(1).next_multiple_of(32),
            Rule::Linux6_9Jit => depth.next_multiple_of(16),
        }
    }
}

/// One BPF function of the object.
#[derive(Debug)]
struct Func {
    name: String,
    /// Bytes below r10 the function uses.
    frame: u32,
    /// Functions it calls (indexes into the object's list).
    callees: Vec<usize>,
    /// A program's entry point (not a subprogram in `.text`).
    entry: bool,
}

/// One instruction's fields.
struct Insn {
    code: u8,
    dst: usize,
    src: usize,
    off: i16,
    imm: i32,
}

fn insn(bytes: &[u8], pc: usize) -> Insn {
    let b = &bytes[pc * INSN..pc * INSN + INSN];
    Insn {
        code: b[0],
        dst: (b[1] & 0x0f) as usize,
        src: (b[1] >> 4) as usize,
        off: i16::from_le_bytes([b[2], b[3]]),
        imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    }
}

/// The deepest byte below r10 that the instructions `code` touch or point at.
///
/// Registers known to hold r10 plus a constant are followed through moves and constant
/// additions, instruction by instruction; at a jump target, after a call (r0 to r5) and
/// after any other write, a register is no longer known.
fn frame_depth(code: &[u8]) -> u32 {
    let n = code.len() / INSN;
    let mut targets = vec![false; n + 1];
    let mut pc = 0;
    while pc < n {
        let i = insn(code, pc);
        let class = i.code & 0x07;
        let op = i.code & 0xf0;
        if (class == CLASS_JMP || class == CLASS_JMP32) && op != JMP_CALL && op != JMP_EXIT {
            let rel = if class == CLASS_JMP32 && op == JMP_JA {
                i.imm as i64
            } else {
                i.off as i64
            };
            let to = pc as i64 + 1 + rel;
            if (0..=n as i64).contains(&to) {
                targets[to as usize] = true;
            }
        }
        pc += if i.code == LD_IMM64 { 2 } else { 1 };
    }

    let mut regs: [Option<i64>; 11] = [None; 11];
    let mut deepest: i64 = 0;
    let mut touch = |at: i64| deepest = deepest.max(-at);
    let mut pc = 0;
    while pc < n {
        if targets[pc] {
            regs = [None; 11];
        }
        regs[R10] = Some(0);
        let i = insn(code, pc);
        let class = i.code & 0x07;
        match class {
            CLASS_LDX => {
                if let Some(base) = regs[i.src] {
                    touch(base + i.off as i64);
                }
                regs[i.dst] = None;
            }
            CLASS_ST | CLASS_STX => {
                if let Some(base) = regs[i.dst] {
                    touch(base + i.off as i64);
                }
                if class == CLASS_STX && i.code & 0xe0 == 0xc0 {
                    // Atomic with fetch may write the source register.
                    regs[i.src] = None;
                }
            }
            CLASS_ALU64 => {
                let op = i.code & 0xf0;
                let by_reg = i.code & SRC_X != 0;
                regs[i.dst] = match (op, by_reg, regs[i.dst]) {
                    (OP_MOV, true, _) => regs[i.src],
                    (OP_ADD, false, Some(v)) => Some(v + i.imm as i64),
                    (OP_SUB, false, Some(v)) => Some(v - i.imm as i64),
                    // A variable index into a stack object: still inside it.
                    (OP_ADD, true, Some(v)) if regs[i.src].is_none() => Some(v),
                    _ => None,
                };
                if let Some(v) = regs[i.dst] {
                    touch(v);
                }
            }
            CLASS_ALU | CLASS_LD => regs[i.dst] = None,
            CLASS_JMP | CLASS_JMP32 if i.code & 0xf0 == JMP_CALL => {
                for r in regs.iter_mut().take(6) {
                    *r = None;
                }
            }
            _ => {}
        }
        pc += if i.code == LD_IMM64 { 2 } else { 1 };
    }
    deepest.max(0) as u32
}

/// The object's functions, their frames and their BPF-to-BPF calls.
fn functions(elf: &[u8]) -> Result<Vec<Func>, String> {
    let file = object::File::parse(elf).map_err(|e| format!("parsing the object: {e}"))?;
    struct Raw<'a> {
        name: String,
        section: object::SectionIndex,
        start: u64,
        code: &'a [u8],
        entry: bool,
    }
    let mut raw = Vec::new();
    for sym in file.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let Some(section) = sym.section_index() else {
            continue;
        };
        let sec = file.section_by_index(section).map_err(|e| e.to_string())?;
        let data = sec.data().map_err(|e| e.to_string())?;
        let (start, size) = (sym.address(), sym.size());
        let code = data
            .get(start as usize..(start + size) as usize)
            .ok_or_else(|| format!("symbol {:?} runs past its section", sym.name()))?;
        let name = sym.name().map_err(|e| e.to_string())?;
        raw.push(Raw {
            name: format!("{:#}", rustc_demangle::demangle(name)),
            section,
            start,
            code,
            entry: sec.name().map_err(|e| e.to_string())? != ".text",
        });
    }
    let at: HashMap<(object::SectionIndex, u64), usize> = raw
        .iter()
        .enumerate()
        .map(|(i, f)| ((f.section, f.start), i))
        .collect();

    let mut funcs = Vec::new();
    for f in &raw {
        let sec = file
            .section_by_index(f.section)
            .map_err(|e| e.to_string())?;
        let relocs: HashMap<u64, object::Relocation> = sec.relocations().collect();
        let mut callees = Vec::new();
        let n = f.code.len() / INSN;
        let mut pc = 0;
        while pc < n {
            let i = insn(f.code, pc);
            let offset = f.start + (pc * INSN) as u64;
            if i.code == CLASS_JMP | JMP_CALL && i.src == PSEUDO_CALL as usize {
                // The callee is `imm + 1` instructions past the call (in its own section),
                // or past the relocation's symbol.
                let skip = (i.imm as i64 + 1) * INSN as i64;
                let target = match relocs.get(&offset).map(|r| r.target()) {
                    Some(RelocationTarget::Symbol(s)) => {
                        let s = file.symbol_by_index(s).map_err(|e| e.to_string())?;
                        let section = s
                            .section_index()
                            .ok_or_else(|| format!("{}: call to an undefined symbol", f.name))?;
                        (section, (s.address() as i64 + skip) as u64)
                    }
                    Some(RelocationTarget::Section(section)) => (section, skip as u64),
                    Some(_) => return Err(format!("{}: unexpected call relocation", f.name)),
                    None => (f.section, (offset as i64 + skip) as u64),
                };
                let callee = at.get(&target).ok_or_else(|| {
                    format!("{}: call at +{offset} to no function's start", f.name)
                })?;
                if !callees.contains(callee) {
                    callees.push(*callee);
                }
            }
            pc += if i.code == LD_IMM64 { 2 } else { 1 };
        }
        funcs.push(Func {
            name: f.name.clone(),
            frame: frame_depth(f.code),
            callees,
            entry: f.entry,
        });
    }
    Ok(funcs)
}

/// A chain of calls from an entry point and its combined stack.
#[derive(Debug)]
struct Chain {
    funcs: Vec<usize>,
    total: u32,
}

/// The chain of calls from `from` with the largest combined stack under `rule`.
fn deepest(funcs: &[Func], from: usize, rule: Rule) -> Result<Chain, String> {
    fn walk(funcs: &[Func], f: usize, rule: Rule, path: &mut Vec<usize>) -> Result<Chain, String> {
        if path.contains(&f) {
            return Err(format!("recursion through {}", funcs[f].name));
        }
        path.push(f);
        let mut best: Option<Chain> = None;
        for &c in &funcs[f].callees {
            let chain = walk(funcs, c, rule, path)?;
            if best.as_ref().is_none_or(|b| chain.total > b.total) {
                best = Some(chain);
            }
        }
        path.pop();
        let mut chain = best.unwrap_or(Chain {
            funcs: Vec::new(),
            total: 0,
        });
        chain.funcs.insert(0, f);
        chain.total += rule.round(funcs[f].frame);
        Ok(chain)
    }
    walk(funcs, from, rule, &mut Vec::new())
}

/// The chain as `name frame -> ...`, each frame as the rule counts it.
fn show(funcs: &[Func], chain: &Chain, rule: Rule) -> String {
    let frames: Vec<String> = chain
        .funcs
        .iter()
        .map(|&f| {
            let (name, frame) = (&funcs[f].name, funcs[f].frame);
            format!("{name} {frame} (counted {})", rule.round(frame))
        })
        .collect();
    format!(
        "{} calls, {} bytes: {}",
        chain.funcs.len(),
        chain.total,
        frames.join(" -> ")
    )
}

/// Every entry point's deepest chain under 6.1's rule, checked against the limits; the
/// error names the offending chain.
fn check(funcs: &[Func]) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    let entries: Vec<usize> = (0..funcs.len()).filter(|&f| funcs[f].entry).collect();
    if entries.is_empty() {
        return Err("no program in the object".into());
    }
    for f in entries {
        let chain = deepest(funcs, f, Rule::Linux6_1)?;
        let line = show(funcs, &chain, Rule::Linux6_1);
        if chain.total > MAX_STACK || chain.funcs.len() > MAX_FRAMES {
            return Err(format!(
                "{}: deepest call chain over the limit ({MAX_STACK} bytes, {MAX_FRAMES} \
                 calls) as Linux 6.1 counts it: {line}",
                funcs[f].name
            ));
        }
        let jit = deepest(funcs, f, Rule::Linux6_9Jit)?;
        report.push(format!(
            "{}: deepest call chain (Linux 6.1 rule) {line}; Linux 6.9+ JIT rule: {} bytes",
            funcs[f].name, jit.total
        ));
    }
    Ok(report)
}

/// Checks the object built into lb-userspace, or the file named by `XLB_XDP_OBJECT` (to
/// check another build: `XLB_XDP_OBJECT=path cargo test -p lb-userspace --test stack_depth`).
#[test]
fn xdp_call_chains_fit_the_stack_of_linux_6_1() {
    let other = std::env::var_os("XLB_XDP_OBJECT")
        .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("reading {p:?}: {e}")));
    let elf = other.as_deref().unwrap_or(lb_userspace::bpf::xdp_object());
    let funcs = functions(elf).expect("reading the XDP object");
    assert!(
        funcs.iter().any(|f| f.name == "xlb" && f.entry),
        "no xlb program in {funcs:?}"
    );
    match check(&funcs) {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => panic!("{e}"),
    }
}

// --- the analysis itself, on hand-assembled code -------------------------------------

/// One instruction's bytes.
fn asm(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let (o, i) = (off.to_le_bytes(), imm.to_le_bytes());
    [code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]]
}

fn program(insns: &[[u8; 8]]) -> Vec<u8> {
    insns.concat()
}

const STX_DW: u8 = 0x7b;
const LDX_W: u8 = 0x61;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const JA: u8 = 0x05;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

#[test]
fn frame_is_the_deepest_r10_access() {
    let code = program(&[
        asm(STX_DW, 10, 1, -24, 0), // *(u64 *)(r10 - 24) = r1
        asm(LDX_W, 2, 10, -4, 0),   // r2 = *(u32 *)(r10 - 4)
        asm(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(frame_depth(&code), 24);
}

#[test]
fn frame_follows_pointers_made_from_r10() {
    // r1 = r10; r1 += -96; r2 = r1; *(u64 *)(r2 - 8) = r3: 104 bytes below r10.
    let code = program(&[
        asm(MOV64_X, 1, 10, 0, 0),
        asm(ADD64_K, 1, 0, 0, -96),
        asm(MOV64_X, 2, 1, 0, 0),
        asm(STX_DW, 2, 3, -8, 0),
        asm(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(frame_depth(&code), 104);
    // A pointer handed to a helper counts even if this code never dereferences it.
    let code = program(&[
        asm(MOV64_X, 2, 10, 0, 0),
        asm(ADD64_K, 2, 0, 0, -200),
        asm(CALL, 0, 0, 0, 1),
        asm(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(frame_depth(&code), 200);
}

#[test]
fn frame_forgets_overwritten_and_jumped_to_registers() {
    let code = program(&[
        asm(MOV64_X, 1, 10, 0, 0),
        asm(MOV64_K, 1, 0, 0, 0),   // r1 = 0: no longer a stack pointer
        asm(STX_DW, 1, 2, -300, 0), // not the stack
        asm(MOV64_X, 3, 10, 0, 0),  // r3 = r10 ...
        asm(JA, 0, 0, 0, 0),        // ... but the next instruction is a jump target
        asm(STX_DW, 3, 2, -400, 0), // r3 unknown here
        asm(STX_DW, 10, 2, -16, 0),
        asm(EXIT, 0, 0, 0, 0),
    ]);
    assert_eq!(frame_depth(&code), 16);
}

fn func(name: &str, frame: u32, callees: &[usize], entry: bool) -> Func {
    Func {
        name: name.into(),
        frame,
        callees: callees.to_vec(),
        entry,
    }
}

#[test]
fn chains_add_frames_rounded_as_linux_6_1_does() {
    // main -> a -> c is the deepest: 40 -> 64, 17 -> 32, 0 -> 32 (6.1); 48, 32, 0 (JIT).
    let funcs = [
        func("main", 40, &[1, 2], true),
        func("a", 17, &[3], false),
        func("b", 10, &[], false),
        func("c", 0, &[], false),
    ];
    let chain = deepest(&funcs, 0, Rule::Linux6_1).unwrap();
    assert_eq!((chain.funcs.clone(), chain.total), (vec![0, 1, 3], 128));
    assert_eq!(deepest(&funcs, 0, Rule::Linux6_9Jit).unwrap().total, 80);
    assert!(check(&funcs).is_ok());
}

#[test]
fn a_chain_over_512_is_refused_with_its_frames() {
    // 5 calls of 100 bytes: 500 as written, 5 x 128 = 640 for 6.1 (6.9's JIT: 560).
    let funcs = [
        func("main", 100, &[1], true),
        func("f1", 100, &[2], false),
        func("f2", 100, &[3], false),
        func("f3", 100, &[4], false),
        func("f4", 100, &[], false),
    ];
    let err = check(&funcs).unwrap_err();
    assert!(err.contains("5 calls, 640 bytes"), "{err}");
    assert!(err.contains("main 100 (counted 128) -> f1"), "{err}");
    // The 32-byte rounding alone can push a chain over: 5 x 97 = 485, counted 5 x 128.
    let funcs = [
        func("main", 97, &[1], true),
        func("f1", 97, &[2], false),
        func("f2", 97, &[3], false),
        func("f3", 97, &[4], false),
        func("f4", 97, &[], false),
    ];
    assert!(check(&funcs).is_err());
    // Recursion is refused by the verifier, and here.
    let funcs = [func("main", 8, &[1], true), func("f", 8, &[1], false)];
    assert!(check(&funcs).unwrap_err().contains("recursion"));
}
