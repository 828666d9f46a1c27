package loader

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
)

// machines maps GOARCH to the ELF machine and class of its shared objects.
var machines = map[string]struct {
	machine elf.Machine
	class   elf.Class
}{
	"amd64":   {elf.EM_X86_64, elf.ELFCLASS64},
	"arm64":   {elf.EM_AARCH64, elf.ELFCLASS64},
	"386":     {elf.EM_386, elf.ELFCLASS32},
	"arm":     {elf.EM_ARM, elf.ELFCLASS32},
	"ppc64le": {elf.EM_PPC64, elf.ELFCLASS64},
	"riscv64": {elf.EM_RISCV, elf.ELFCLASS64},
	"s390x":   {elf.EM_S390, elf.ELFCLASS64},
	"loong64": {elf.EM_LOONGARCH, elf.ELFCLASS64},
}

// CheckFile examines a candidate file without loading it: it must be a
// complete ELF shared object for this machine (every header, section and
// loadable segment inside the file, so a half-finished copy is caught before
// dlopen can fault on it) carrying Go build info of -buildmode=plugin. The
// returned error is a *RejectError at StageCheck, or nil. Malformed input
// never makes it panic.
func CheckFile(path string) error { return checkPath(path, checkELF) }

// checkPath runs check on the open file at path.
func checkPath(path string, check func(io.ReaderAt, int64) *RejectError) error {
	f, err := os.Open(path)
	if err != nil {
		return reject(path, StageCheck, ErrNotRegular, "%v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return reject(path, StageCheck, ErrNotRegular, "%v", err)
	}
	if cerr := check(f, fi.Size()); cerr != nil {
		cerr.Path = path
		return cerr
	}
	return nil
}

// checkELF is CheckFile on an open file of the given size.
func checkELF(r io.ReaderAt, size int64) (rerr *RejectError) {
	defer recoverELF(&rerr)
	ef, rerr := openELF(r, size)
	if rerr != nil {
		return rerr
	}
	if ef.Type != elf.ET_DYN {
		return reject("", StageCheck, ErrNotPlugin, "ELF type %s, a plugin is ET_DYN (a shared object)", ef.Type)
	}
	if rerr := checkExtents(ef, size); rerr != nil {
		return rerr
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return reject("", StageCheck, ErrNotPlugin, "it is an executable (it has a program interpreter), not a shared object")
		}
	}
	bi, err := buildinfo.Read(r)
	if err != nil {
		return reject("", StageCheck, ErrNotPlugin, "no Go build info (%v)", err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-buildmode" && s.Value != "plugin" {
			return reject("", StageCheck, ErrNotPlugin, "a Go %s built with -buildmode=%s", bi.GoVersion, s.Value)
		}
	}
	return nil
}

// CheckExecutable examines an out-of-process plugin without running it: a
// complete ELF executable for this machine carrying Go build info, not
// built as a plugin. Its Go version and modules are its own business. The
// error is a *RejectError at StageCheck, or nil.
func CheckExecutable(path string) error { return checkPath(path, checkExecELF) }

func checkExecELF(r io.ReaderAt, size int64) (rerr *RejectError) {
	defer recoverELF(&rerr)
	ef, rerr := openELF(r, size)
	if rerr != nil {
		return rerr
	}
	if ef.Type != elf.ET_EXEC && ef.Type != elf.ET_DYN {
		return reject("", StageCheck, ErrNotExecutable, "ELF type %s, not an executable", ef.Type)
	}
	if rerr := checkExtents(ef, size); rerr != nil {
		return rerr
	}
	bi, err := buildinfo.Read(r)
	if err != nil {
		return reject("", StageCheck, ErrNotExecutable, "no Go build info (%v): not a Go program", err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-buildmode" && s.Value != "exe" && s.Value != "pie" {
			return reject("", StageCheck, ErrNotExecutable, "a Go %s built with -buildmode=%s, not a program", bi.GoVersion, s.Value)
		}
	}
	return nil
}

// recoverELF turns a panic of debug/elf into a rejection: it has panicked
// on malformed input before, and a candidate file must never take the
// daemon down with it.
func recoverELF(rerr **RejectError) {
	if p := recover(); p != nil {
		*rerr = reject("", StageCheck, ErrNotELF, "malformed ELF (parser panicked: %v)", p)
	}
}

// openELF checks what every candidate must be: a non-empty ELF file for
// this machine whose header tables lie inside it.
func openELF(r io.ReaderAt, size int64) (*elf.File, *RejectError) {
	if size == 0 {
		return nil, reject("", StageCheck, ErrEmpty, "")
	}
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || !bytes.Equal(magic[:], []byte(elf.ELFMAG)) {
		return nil, reject("", StageCheck, ErrNotELF, "the file does not start with the ELF magic")
	}
	if rerr := checkHeaderTables(r, size); rerr != nil {
		return nil, rerr
	}
	ef, err := elf.NewFile(r)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, reject("", StageCheck, ErrTruncated, "the file of %d bytes ends inside its ELF structures (a copy still in progress?)", size)
	}
	if err != nil {
		return nil, reject("", StageCheck, ErrNotELF, "%v", err)
	}
	want, ok := machines[runtime.GOARCH]
	if ok && (ef.Machine != want.machine || ef.Class != want.class) {
		return nil, reject("", StageCheck, ErrWrongArch, "%s %s, this machine needs %s %s", ef.Class, ef.Machine, want.class, want.machine)
	}
	return ef, nil
}

// checkHeaderTables reads the raw ELF header and verifies that it, the
// program header table and the section header table lie inside the file.
func checkHeaderTables(r io.ReaderAt, size int64) *RejectError {
	var ident [elf.EI_NIDENT]byte
	if _, err := r.ReadAt(ident[:], 0); err != nil {
		return reject("", StageCheck, ErrTruncated, "%d bytes is shorter than an ELF identification", size)
	}
	var order binary.ByteOrder
	switch elf.Data(ident[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return reject("", StageCheck, ErrNotELF, "unknown ELF data encoding %d", ident[elf.EI_DATA])
	}
	sr := io.NewSectionReader(r, 0, size)
	var phoff, shoff, phsize, shsize uint64
	switch elf.Class(ident[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
		var h elf.Header64
		if err := binary.Read(sr, order, &h); err != nil {
			return reject("", StageCheck, ErrTruncated, "%d bytes is shorter than an ELF header", size)
		}
		phoff, shoff = h.Phoff, h.Shoff
		phsize, shsize = uint64(h.Phentsize)*uint64(h.Phnum), uint64(h.Shentsize)*uint64(h.Shnum)
	case elf.ELFCLASS32:
		var h elf.Header32
		if err := binary.Read(sr, order, &h); err != nil {
			return reject("", StageCheck, ErrTruncated, "%d bytes is shorter than an ELF header", size)
		}
		phoff, shoff = uint64(h.Phoff), uint64(h.Shoff)
		phsize, shsize = uint64(h.Phentsize)*uint64(h.Phnum), uint64(h.Shentsize)*uint64(h.Shnum)
	default:
		return reject("", StageCheck, ErrNotELF, "unknown ELF class %d", ident[elf.EI_CLASS])
	}
	for _, t := range []struct {
		what      string
		off, size uint64
	}{{"program header table", phoff, phsize}, {"section header table", shoff, shsize}} {
		if end := t.off + t.size; end < t.off || end > uint64(size) {
			return reject("", StageCheck, ErrTruncated,
				"the %s ends at byte %d of a %d-byte file (a copy still in progress?)", t.what, end, size)
		}
	}
	return nil
}

// checkExtents verifies that the header tables, every section with file
// content and every loadable segment end inside the file.
func checkExtents(ef *elf.File, size int64) *RejectError {
	for _, p := range ef.Progs {
		if end := p.Off + p.Filesz; p.Type == elf.PT_LOAD && (end < p.Off || end > uint64(size)) {
			return reject("", StageCheck, ErrTruncated,
				"a loadable segment ends at byte %d of a %d-byte file (a copy still in progress?)", end, size)
		}
	}
	for _, s := range ef.Sections {
		if s.Type == elf.SHT_NOBITS || s.Type == elf.SHT_NULL {
			continue
		}
		if end := s.Offset + s.FileSize; end < s.Offset || end > uint64(size) {
			return reject("", StageCheck, ErrTruncated,
				"section %s ends at byte %d of a %d-byte file (a copy still in progress?)", s.Name, end, size)
		}
	}
	return nil
}
