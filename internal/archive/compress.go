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
	// Concurrency is how many chunks of this layer the process's
	// compressor pool may compress at once (see PoolWorkers); 0, or more
	// than the pool has, means all of its workers. It changes the speed,
	// never the bytes.
	Concurrency int
	// Progress, if set, is told the length of every write to the
	// uncompressed tar stream (headers, file content, padding) as it
	// happens, on the goroutine that called PackWith: for a pack's
	// progress. It changes nothing in the bytes.
	Progress func(n int64)
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

// The compressor pool. Packing memory is chunk buffers, and a pool per
// layer would make it grow with builds × layers × cores × chunk size; so
// the whole process shares one pool, whatever the number of layers packed
// at once:
//
//   - PoolWorkers goroutines (GOMAXPROCS when the pool is first used)
//     compress the chunks of every layer. Each keeps one compressor per
//     format, reused from chunk to chunk and layer to layer (see run for
//     its size).
//   - Every chunk in use anywhere holds one of PoolChunks tokens
//     (2 × PoolWorkers + 2) from the moment a layer starts filling it
//     until its compressed bytes are written out: its input (gzip 1 MiB,
//     zstd 4 MiB) and its output (at most about as large) exist only
//     while it holds one. So chunk buffers never take more than about
//     2 × PoolChunks × chunk size: 12 MiB for gzip on 2 cores, 132 MiB on
//     32 (zstd: four times that), plus the compressors' own state
//     (PoolWorkers × about 1 MiB for gzip, and 17 MiB more once zstd is
//     used).
//   - A layer that wants a chunk while all are in use waits until another
//     layer's chunk is written out: a burst of builds packs more slowly
//     per layer, in the same total time, in bounded memory.
//
// Tokens always come back: a chunk submitted to the pool is compressed
// and written (or dropped after an error) without waiting for anything but
// the layer's own writer, and a layer holds at most one chunk that is not
// yet submitted.

// pool is the process's compressor pool, started at its first use.
var (
	poolOnce sync.Once
	pool     *compressorPool
)

func defaultPool() *compressorPool {
	poolOnce.Do(func() {
		workers := runtime.GOMAXPROCS(0)
		pool = newCompressorPool(workers, 2*workers+2)
	})
	return pool
}

// PoolWorkers is the number of goroutines compressing for the whole
// process (GOMAXPROCS when first asked).
func PoolWorkers() int { return defaultPool().workers }

// PoolChunks is the most chunk buffers packing holds at once in the whole
// process, whatever the number of layers packed concurrently.
func PoolChunks() int { return cap(defaultPool().tokens) }

type compressorPool struct {
	workers int
	tokens  chan struct{}     // a send takes a token, a receive gives it back
	work    chan *chunk       // never full: every chunk in it holds a token
	bufs    map[int]*freeList // input buffers, by chunk size
	outs    map[int]*freeList // output buffers, by chunk size

	// Buffers handed out and not yet given back, now and at most: inputs
	// (one per chunk holding a token) and outputs (one per chunk being
	// compressed or written).
	inUse, peak       atomic.Int64
	outInUse, outPeak atomic.Int64
	// onWait, if set, is called when a layer has to wait for a token
	// (a hook for tests).
	onWait func()
}

func newCompressorPool(workers, chunks int) *compressorPool {
	p := &compressorPool{
		workers: workers,
		tokens:  make(chan struct{}, chunks),
		work:    make(chan *chunk, chunks),
		bufs:    map[int]*freeList{},
		outs:    map[int]*freeList{},
	}
	for _, size := range []int{gzipChunk, zstdChunk} {
		p.bufs[size] = newFreeList(chunks, size)
		p.outs[size] = newFreeList(chunks, outCap(size))
	}
	for range workers {
		go p.run()
	}
	return p
}

// acquire takes a token and returns an empty input buffer of size bytes.
func (p *compressorPool) acquire(size int) []byte {
	select {
	case p.tokens <- struct{}{}:
	default:
		if p.onWait != nil {
			p.onWait()
		}
		p.tokens <- struct{}{}
	}
	count(&p.inUse, &p.peak, 1)
	return p.bufs[size].get()
}

// count adds d to n and keeps peak at the largest n seen.
func count(n, peak *atomic.Int64, d int64) {
	v := n.Add(d)
	for old := peak.Load(); v > old && !peak.CompareAndSwap(old, v); old = peak.Load() {
	}
}

// release returns a chunk's buffers and its token.
func (p *compressorPool) release(c *chunk) {
	p.bufs[c.size].put(c.in)
	if c.out != nil {
		p.outs[c.size].put(c.out)
		count(&p.outInUse, &p.outPeak, -1)
	}
	c.in, c.out, c.dict = nil, nil, nil
	count(&p.inUse, &p.peak, -1)
	<-p.tokens
}

// releaseBuf gives back a buffer that was never submitted.
func (p *compressorPool) releaseBuf(size int, buf []byte) {
	p.bufs[size].put(buf)
	count(&p.inUse, &p.peak, -1)
	<-p.tokens
}

// freeList keeps buffers of one capacity for reuse. The pool's tokens bound
// how many buffers are in use at once, so a list as long as the tokens
// keeps every one of them: after warm-up packing allocates no chunk
// buffers (a sync.Pool would drop them at every garbage collection).
type freeList struct {
	free chan []byte
	cap  int
}

func newFreeList(n, capacity int) *freeList {
	return &freeList{free: make(chan []byte, n), cap: capacity}
}

// get returns an empty buffer of the list's capacity.
func (l *freeList) get() []byte {
	select {
	case b := <-l.free:
		return b
	default:
		return make([]byte, 0, l.cap)
	}
}

// put gives b back. A buffer that grew beyond the list's capacity (an
// output larger than outCap) is dropped, and so is one beyond the list's
// length, which the tokens rule out.
func (l *freeList) put(b []byte) {
	if cap(b) != l.cap {
		return
	}
	select {
	case l.free <- b[:0]:
	default:
	}
}

// outCap is the capacity of output buffers for chunks of size bytes: room
// for incompressible data and the formats' framing (deflate: 5 bytes per
// stored block of up to 64 KiB; zstd: 3 bytes per 128 KiB block and the
// frame header), so that output buffers do not grow.
func outCap(size int) int { return size + size/64 + 1024 }

// compressorKey names a compressor: a format and what changes its output.
type compressorKey struct {
	format Format
	level  int // gzip: 1…9 or -2; zstd: a zstd.EncoderLevel
}

// run is one worker: it compresses chunks of any layer, in any format. It
// keeps one compressor per format, for the level last asked for (a
// process uses one level per format, from its configuration), so its
// state stays bounded: about 1 MiB for gzip, 17 MiB for zstd at its
// default speed.
func (p *compressorPool) run() {
	type compressor struct {
		key      compressorKey
		compress func(*chunk)
	}
	compressors := map[Format]compressor{}
	for c := range p.work {
		comp, ok := compressors[c.key.format]
		if !ok || comp.key != c.key {
			f, err := newCompressor(c.key)
			if err != nil {
				c.err = err
				c.done()
				continue
			}
			comp = compressor{c.key, f}
			compressors[c.key.format] = comp
		}
		compress := comp.compress
		count(&p.outInUse, &p.outPeak, 1)
		c.out = p.outs[c.size].get()
		compress(c)
		c.done()
	}
}

// newCompressor returns a function that compresses one chunk, with state
// of its own (one per worker).
func newCompressor(k compressorKey) (func(*chunk), error) {
	switch k.format {
	case Zstd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(k.level)),
			zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return func(c *chunk) { c.out = enc.EncodeAll(c.in, c.out) }, nil
	default:
		fw, err := flate.NewWriter(io.Discard, k.level)
		if err != nil {
			return nil, fmt.Errorf("gzip level %d: %w", k.level, err)
		}
		return func(c *chunk) {
			out := bytes.NewBuffer(c.out)
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

// chunk is one piece of a layer's stream on its way through the pool.
type chunk struct {
	key   compressorKey
	size  int // the layer's chunk size: which buffers it uses
	in    []byte
	dict  []byte // gzip: the window before in
	last  bool
	out   []byte
	err   error
	slot  chan struct{} // the layer's: given back once compressed
	ready chan struct{}
}

// done marks the chunk compressed and frees its layer's slot.
func (c *chunk) done() {
	<-c.slot
	close(c.ready)
}

// chunkWriter compresses what is written to it in fixed-size chunks on the
// process's compressor pool, and writes the compressed chunks to dst in
// order: a single gzip member whose deflate stream is the concatenation of
// the chunks (each but the last ends with a sync flush), or a sequence of
// zstd frames, which the zstd format defines as one stream.
type chunkWriter struct {
	pool      *compressorPool
	key       compressorKey
	chunkSize int
	dst       io.Writer

	buf  []byte // the chunk being filled; nil when this layer holds none
	tail []byte // gzip: the last window of the previous chunk
	crc  uint32
	n    int64

	slots chan struct{} // a layer's chunks being compressed (Concurrency)
	queue chan *chunk   // in stream order, to the writer
	done  chan struct{}
	werr  error // the writer's first error; read after done is closed
	// failed holds werr for the producer while the writer still runs.
	failed atomic.Pointer[error]
}

// gzipHeader is a gzip member header without name, comment, extra field or
// modification time, from an "unknown" operating system (RFC 1952 §2.3).
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}

func newChunkWriter(p *compressorPool, dst io.Writer, opts Options) (*chunkWriter, error) {
	cw := &chunkWriter{pool: p, dst: dst, key: compressorKey{format: opts.Format, level: opts.Level}}
	switch opts.Format {
	case Gzip:
		if cw.key.level == 0 {
			cw.key.level = DefaultGzipLevel
		}
		if cw.key.level < flate.HuffmanOnly || cw.key.level > flate.BestCompression {
			return nil, fmt.Errorf("gzip level %d: want 1 to 9, or -2", opts.Level)
		}
		cw.chunkSize = gzipChunk
	case Zstd:
		if opts.Level < 0 || opts.Level > 22 {
			return nil, fmt.Errorf("zstd level %d: want 1 to 22", opts.Level)
		}
		cw.key.level = int(zstd.SpeedDefault)
		if opts.Level != 0 {
			cw.key.level = int(zstd.EncoderLevelFromZstd(opts.Level))
		}
		cw.chunkSize = zstdChunk
	default:
		return nil, fmt.Errorf("unknown compression format %d", int(opts.Format))
	}
	conc := opts.Concurrency
	if conc <= 0 || conc > p.workers {
		conc = p.workers
	}
	if opts.Format == Gzip {
		if _, err := dst.Write(gzipHeader); err != nil {
			return nil, err
		}
	}
	// Up to two chunks per slot in flight: one being compressed, one
	// compressed and waiting to be written.
	cw.slots = make(chan struct{}, conc)
	cw.queue = make(chan *chunk, 2*conc)
	cw.done = make(chan struct{})
	go cw.writeOut()
	return cw, nil
}

// writeOut writes compressed chunks to dst in stream order and gives their
// buffers back to the pool. After an error it keeps draining the queue so
// that the producer never blocks.
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
		cw.pool.release(c)
	}
}

func (cw *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if cw.buf == nil {
			if err := cw.failed.Load(); err != nil {
				return written, *err
			}
			cw.buf = cw.pool.acquire(cw.chunkSize)
		}
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

// submit hands the current chunk to the pool.
func (cw *chunkWriter) submit(last bool) error {
	if err := cw.failed.Load(); err != nil {
		return *err
	}
	if cw.buf == nil {
		cw.buf = cw.pool.acquire(cw.chunkSize) // an empty last chunk
	}
	c := &chunk{key: cw.key, size: cw.chunkSize, in: cw.buf, last: last, slot: cw.slots, ready: make(chan struct{})}
	cw.buf = nil
	if cw.key.format == Gzip {
		cw.crc = crc32.Update(cw.crc, crc32.IEEETable, c.in)
		cw.n += int64(len(c.in))
		c.dict = cw.tail
		// The next chunk's dictionary must outlive this chunk's buffer,
		// which returns to the pool once written.
		cw.tail = append(cw.tail[:0:0], c.in[max(0, len(c.in)-window):]...)
	}
	cw.queue <- c
	cw.slots <- struct{}{}
	cw.pool.work <- c
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
	if cw.key.format == Gzip {
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

// abort stops without finishing the stream.
func (cw *chunkWriter) abort() { cw.stop() }

// stop waits until every submitted chunk is written (or dropped) and gives
// back the one being filled, so the layer holds no token afterwards.
func (cw *chunkWriter) stop() {
	if cw.buf != nil {
		cw.pool.releaseBuf(cw.chunkSize, cw.buf)
		cw.buf = nil
	}
	close(cw.queue)
	<-cw.done
}
