package archive

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// Format is the compression of a layer blob.
type Format int

const (
	// Gzip is the default and the only format every client understands.
	Gzip Format = iota
	// Zstd layers are smaller and faster to unpack, but only newer clients
	// (containerd ≥ 1.5, podman, Docker ≥ 23 with containerd storage)
	// accept them, so they are opt-in.
	Zstd
)

// String returns "gzip" or "zstd".
func (f Format) String() string {
	switch f {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Options say how PackWith compresses. The zero value is gzip at the
// default level on every core.
type Options struct {
	Format Format
	// Level is the compression level; 0 means the format's default.
	// Gzip: 1 (fastest) … 9 (best), default DefaultGzipLevel, or -2
	// (Huffman only). Zstd: the levels of the zstd tool, 1 … 22, mapped to
	// the four speeds of klauspost/compress/zstd (default: its
	// SpeedDefault, about zstd level 3).
	Level int
	// Concurrency is the number of goroutines compressing one layer;
	// 0 means GOMAXPROCS. It changes the speed, never the bytes.
	Concurrency int
}

// DefaultGzipLevel is the gzip level used when Options.Level is 0: the
// default of gzip(1) and of Go's compress/gzip.
const DefaultGzipLevel = 6

// Chunk sizes: the tar stream is compressed in pieces of this many bytes,
// each by one goroutine. They are constants, because the output depends on
// them. A gzip chunk is primed with the last 32 KiB (the deflate window) of
// the chunk before it, as pigz does, so splitting costs almost nothing; zstd
// chunks become independent frames, so they are larger.
const (
	gzipChunk = 1 << 20
	zstdChunk = 4 << 20
	window    = 32 << 10
)

// chunk is one piece of the stream on its way through a compressor.
type chunk struct {
	in    []byte
	dict  []byte // gzip: the window before in
	last  bool
	out   []byte
	err   error
	ready chan struct{}
}

// chunkWriter compresses what is written to it on several goroutines, in
// fixed-size chunks, and writes the compressed chunks to dst in order: a
// single gzip member whose deflate stream is the concatenation of the
// chunks (each but the last ends with a sync flush), or a sequence of zstd
// frames, which the zstd format defines as one stream.
type chunkWriter struct {
	format    Format
	level     int
	chunkSize int
	dst       io.Writer

	buf  []byte // the chunk being filled
	tail []byte // gzip: the last window of the previous chunk
	crc  uint32
	n    int64

	work  chan *chunk // to the compressors
	queue chan *chunk // in stream order, to the writer
	done  chan struct{}
	werr  error // the writer's first error; read after done is closed
	// failed holds werr for the producer while the writer still runs.
	failed atomic.Pointer[error]
	pool   sync.Pool
	wg     sync.WaitGroup
}

// gzipHeader is a gzip member header without name, comment, extra field or
// modification time, from an "unknown" operating system (RFC 1952 §2.3).
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

func newChunkWriter(dst io.Writer, opts Options) (*chunkWriter, error) {
	cw := &chunkWriter{format: opts.Format, dst: dst, level: opts.Level}
	switch opts.Format {
	case Gzip:
		if cw.level == 0 {
			cw.level = DefaultGzipLevel
		}
		if cw.level < flate.HuffmanOnly || cw.level > flate.BestCompression {
			return nil, fmt.Errorf("gzip level %d: want 1 to 9, or -2", opts.Level)
		}
		cw.chunkSize = gzipChunk
	case Zstd:
		if cw.level < 0 || cw.level > 22 {
			return nil, fmt.Errorf("zstd level %d: want 1 to 22", opts.Level)
		}
		cw.chunkSize = zstdChunk
	default:
		return nil, fmt.Errorf("unknown compression format %d", int(opts.Format))
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}

	// Build one compressor per worker before starting anything, so that a
	// bad option is reported without goroutines to clean up.
	compressors := make([]func(*chunk), workers)
	for i := range compressors {
		c, err := cw.compressor()
		if err != nil {
			return nil, err
		}
		compressors[i] = c
	}
	if opts.Format == Gzip {
		if _, err := dst.Write(gzipHeader); err != nil {
			return nil, err
		}
	}

	cw.pool.New = func() any { return make([]byte, 0, cw.chunkSize) }
	cw.buf = cw.pool.Get().([]byte)[:0]
	// Two chunks per worker in flight: one being compressed, one waiting.
	cw.work = make(chan *chunk, 2*workers)
	cw.queue = make(chan *chunk, 2*workers)
	cw.done = make(chan struct{})
	for _, compress := range compressors {
		cw.wg.Add(1)
		go func() {
			defer cw.wg.Done()
			for c := range cw.work {
				compress(c)
				close(c.ready)
			}
		}()
	}
	go cw.writeOut()
	return cw, nil
}

// compressor returns a function that compresses one chunk, with state of
// its own (one per worker).
func (cw *chunkWriter) compressor() (func(*chunk), error) {
	switch cw.format {
	case Zstd:
		level := zstd.SpeedDefault
		if cw.level != 0 {
			level = zstd.EncoderLevelFromZstd(cw.level)
		}
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level),
			zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, fmt.Errorf("zstd level %d: %w", cw.level, err)
		}
		return func(c *chunk) { c.out = enc.EncodeAll(c.in, c.out[:0]) }, nil
	default:
		fw, err := flate.NewWriter(io.Discard, cw.level)
		if err != nil {
			return nil, fmt.Errorf("gzip level %d: %w", cw.level, err)
		}
		return func(c *chunk) {
			out := bytes.NewBuffer(c.out[:0])
			fw.ResetDict(out, c.dict)
			_, err := fw.Write(c.in)
			if err == nil && c.last {
				err = fw.Close()
			} else if err == nil {
				// A sync flush ends the chunk on a byte boundary with a
				// non-final block, so the next chunk's deflate data can
				// follow it directly.
				err = fw.Flush()
			}
			c.out, c.err = out.Bytes(), err
		}, nil
	}
}

// writeOut writes compressed chunks to dst in stream order. After an error
// it keeps draining the queue so that the producer never blocks.
func (cw *chunkWriter) writeOut() {
	defer close(cw.done)
	for c := range cw.queue {
		<-c.ready
		if cw.werr == nil {
			cw.werr = c.err
		}
		if cw.werr == nil {
			_, cw.werr = cw.dst.Write(c.out)
		}
		if cw.werr != nil && cw.failed.Load() == nil {
			err := cw.werr
			cw.failed.Store(&err)
		}
		cw.pool.Put(c.in[:0])
	}
}

func (cw *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), cw.chunkSize-len(cw.buf))
		cw.buf = append(cw.buf, p[:k]...)
		p, written = p[k:], written+k
		if len(cw.buf) == cw.chunkSize {
			if err := cw.submit(false); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// submit hands the current chunk to the compressors.
func (cw *chunkWriter) submit(last bool) error {
	if err := cw.failed.Load(); err != nil {
		return *err
	}
	c := &chunk{in: cw.buf, last: last, ready: make(chan struct{})}
	if cw.format == Gzip {
		cw.crc = crc32.Update(cw.crc, crc32.IEEETable, c.in)
		cw.n += int64(len(c.in))
		c.dict = cw.tail
		// The next chunk's dictionary must outlive this chunk's buffer,
		// which returns to the pool once written.
		cw.tail = append([]byte(nil), c.in[max(0, len(c.in)-window):]...)
	}
	cw.queue <- c
	cw.work <- c
	cw.buf = cw.pool.Get().([]byte)[:0]
	return nil
}

// Close compresses what is left, waits for every chunk to be written and
// finishes the stream.
func (cw *chunkWriter) Close() error {
	err := cw.submit(true)
	cw.stop()
	if err != nil {
		return err
	}
	if cw.werr != nil {
		return cw.werr
	}
	if cw.format == Gzip {
		// RFC 1952 §2.3.1: CRC-32 and length mod 2³² of the
		// uncompressed data, little-endian.
		var trailer [8]byte
		binary.LittleEndian.PutUint32(trailer[:4], cw.crc)
		binary.LittleEndian.PutUint32(trailer[4:], uint32(cw.n))
		if _, err := cw.dst.Write(trailer[:]); err != nil {
			return err
		}
	}
	return nil
}

// abort stops the goroutines without finishing the stream.
func (cw *chunkWriter) abort() { cw.stop() }

func (cw *chunkWriter) stop() {
	close(cw.work)
	close(cw.queue)
	cw.wg.Wait()
	<-cw.done
}
