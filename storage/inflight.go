package storage

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// inFlight is the SDK's HTTP client behind a cap on requests in flight: a
// request takes a slot before it is sent and gives it back when its
// response body is read to its end or closed (the SDK closes every body
// but a GetObject's, which the caller closes), or when it fails.
//
// Why requests and not connections (http.Transport.MaxConnsPerHost): a
// connection counts against the transport's cap until it is closed, and
// servers that close every connection after one response (versitygw does
// unless started with --keep-alive; so do proxies and load balancers under
// pressure) leave a closing connection holding a slot while no request
// uses it. With a cap of 16 connections ferry ran about 14.5 requests at
// once against such a server, where a program of 16 goroutines runs 16
// (docs/performance.md). The cap a user sets with max_pool_connections is
// meant as "this many transfers talking to the server at once"; counting
// requests keeps exactly that, and a closing connection no longer costs a
// transfer its turn.
type inFlight struct {
	next aws.HTTPClient
	sem  chan struct{}
}

func newInFlight(next aws.HTTPClient, n int) *inFlight {
	return &inFlight{next: next, sem: make(chan struct{}, n)}
}

// slotHeld marks the context of a request sent on behalf of a transfer
// that already holds a slot, and holds it until this request has been
// answered: the HEADs by which ETagCheck learns part sizes while the GET
// they verify has its body open (Get, a batch's streamed copy). Waiting
// for a slot there would wait for good once every slot is held so (with
// max_pool_connections 1, by a single Get), so they take none: a profile
// may then have a few more requests in flight than its cap, at most
// partHeadConcurrency per such transfer.
type slotHeld struct{}

// withSlotHeld returns ctx for requests that need no slot of their own
// (see slotHeld).
func withSlotHeld(ctx context.Context) context.Context {
	return context.WithValue(ctx, slotHeld{}, true)
}

// Do sends req once a slot is free, or fails with req's context.
func (c *inFlight) Do(req *http.Request) (*http.Response, error) {
	if req.Context().Value(slotHeld{}) != nil {
		return c.next.Do(req)
	}
	select {
	case c.sem <- struct{}{}:
	case <-req.Context().Done():
		return nil, fmt.Errorf("wait for one of the profile's %d requests in flight: %w", cap(c.sem), req.Context().Err())
	}
	resp, err := c.next.Do(req)
	if err != nil || resp == nil || resp.Body == nil {
		<-c.sem
		return resp, err
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, release: func() { <-c.sem }}
	return resp, nil
}

// slotBody gives its request's slot back once, at the body's end or close.
type slotBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *slotBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}
