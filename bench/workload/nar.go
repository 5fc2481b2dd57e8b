package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"path"
)

// This file serialises a directory tree as a Nix archive (NAR), the form
// Nix hashes a store path in: builtins.path's sha256 argument is the
// sha256 of the NAR of the directory imported, and `nix path-info`'s
// narSize is its length. The format (Eelco Dolstra's thesis, §5.2.1; Nix's
// src/libutil/archive.cc) is a sequence of strings, each an unsigned
// 64-bit little-endian length, the bytes, and zero padding to a multiple
// of 8:
//
//	nar       = "nix-archive-1" node
//	node      = "(" "type" ( regular | directory | symlink ) ")"
//	regular   = "regular" [ "executable" "" ] "contents" <bytes>
//	directory = "directory" { "entry" "(" "name" <name> "node" node ")" }  (entries sorted by name)
//	symlink   = "symlink" "target" <target>
//
// Only what the generated store paths have is supported: directories and
// regular files (the executable bit is the owner's x bit).

// narWriter writes NAR strings and counts the bytes.
type narWriter struct {
	w   io.Writer // nil: only count
	n   int64
	err error
}

func (nw *narWriter) str(s string) {
	nw.bytes(int64(len(s)), func(w io.Writer) error { _, err := io.WriteString(w, s); return err })
}

// bytes writes one NAR string of n bytes that write produces.
func (nw *narWriter) bytes(n int64, write func(io.Writer) error) {
	if nw.err != nil {
		return
	}
	pad := (8 - n%8) % 8
	nw.n += 8 + n + pad
	if nw.w == nil {
		return
	}
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(n))
	if _, nw.err = nw.w.Write(hdr[:]); nw.err != nil {
		return
	}
	if nw.err = write(nw.w); nw.err != nil {
		return
	}
	var zeros [8]byte
	_, nw.err = nw.w.Write(zeros[:pad])
}

// writeNAR writes the NAR of the tree at root of fsys to w (nil: only
// count) and returns its length.
func writeNAR(w io.Writer, fsys fs.FS, root string) (int64, error) {
	nw := &narWriter{w: w}
	nw.str("nix-archive-1")
	if err := nw.node(fsys, root); err != nil {
		return 0, err
	}
	return nw.n, nw.err
}

func (nw *narWriter) node(fsys fs.FS, name string) error {
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		return err
	}
	nw.str("(")
	nw.str("type")
	switch {
	case fi.Mode().IsRegular():
		nw.str("regular")
		if fi.Mode()&0o100 != 0 {
			nw.str("executable")
			nw.str("")
		}
		nw.str("contents")
		nw.bytes(fi.Size(), func(w io.Writer) error {
			f, err := fsys.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := io.Copy(w, f)
			if err == nil && n != fi.Size() {
				err = fmt.Errorf("%s changed size while read (%d bytes, then %d)", name, fi.Size(), n)
			}
			return err
		})
	case fi.IsDir():
		nw.str("directory")
		entries, err := fs.ReadDir(fsys, name) // sorted by name, as NAR wants (byte order)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !e.Type().IsRegular() && !e.IsDir() {
				return fmt.Errorf("%s: %v is not supported (only regular files and directories)", path.Join(name, e.Name()), e.Type())
			}
			nw.str("entry")
			nw.str("(")
			nw.str("name")
			nw.str(e.Name())
			nw.str("node")
			if err := nw.node(fsys, path.Join(name, e.Name())); err != nil {
				return err
			}
			nw.str(")")
		}
	default:
		return fmt.Errorf("%s: %v is not supported (only regular files and directories)", name, fi.Mode().Type())
	}
	nw.str(")")
	return nw.err
}
