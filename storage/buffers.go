package storage

import (
	"context"
	"fmt"
	"sync"
)

// BufferPool hands out part buffers under a byte budget, so many concurrent
// uploads in one process cannot together allocate more than the budget. Freed
// buffers are kept for reuse (they count against the budget) and dropped when
// a buffer of another size needs the room.
type BufferPool struct {
	max     int64
	mu      sync.Mutex
	used    int64 // bytes in use or cached
	free    map[int][][]byte
	changed chan struct{} // closed and replaced whenever room may have appeared
}

// NewBufferPool returns a pool that never holds more than maxBytes.
func NewBufferPool(maxBytes int64) *BufferPool {
	return &BufferPool{max: maxBytes, free: map[int][][]byte{}, changed: make(chan struct{})}
}

// Max returns the budget in bytes.
func (p *BufferPool) Max() int64 { return p.max }

// Get returns a buffer of exactly size bytes, waiting while the budget is spent.
func (p *BufferPool) Get(ctx context.Context, size int) ([]byte, error) {
	if int64(size) > p.max {
		// A ConfigError: no retry can succeed (the task is archived).
		// The part may be larger than the configured part_size: an object
		// too large for 10,000 parts of part_size gets parts of size/10,000
		// (a 5 TiB file needs 525 MiB parts). Lowering part_size cannot help
		// then, so the advice names the size the budget must reach.
		return nil, &ConfigError{Field: "max_buffer_memory", Reason: fmt.Sprintf("a part of %d bytes does not fit the worker's buffer budget of %d bytes: raise max_buffer_memory to at least %d (parts are part_size, or size/10,000 for objects too large for 10,000 parts), or lower part_size if it is the configured one", size, p.max, size)}
	}
	for {
		p.mu.Lock()
		if l := p.free[size]; len(l) > 0 {
			b := l[len(l)-1]
			p.free[size] = l[:len(l)-1]
			p.mu.Unlock()
			return b, nil
		}
		// Make room by dropping cached buffers of other sizes.
		for sz, l := range p.free {
			for len(l) > 0 && p.used+int64(size) > p.max {
				l = l[:len(l)-1]
				p.used -= int64(sz)
			}
			p.free[sz] = l
		}
		if p.used+int64(size) <= p.max {
			p.used += int64(size)
			p.mu.Unlock()
			return make([]byte, size), nil
		}
		wait := p.changed
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

// Put returns a buffer got from Get.
func (p *BufferPool) Put(b []byte) {
	if b == nil {
		return
	}
	p.mu.Lock()
	p.free[cap(b)] = append(p.free[cap(b)], b[:cap(b)])
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}
