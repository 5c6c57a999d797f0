package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/ferryhq/ferry/storage"
	"github.com/ferryhq/ferry/tasks"
)

// errNotAllowed: a source outside what the worker's configuration allows.
var errNotAllowed = errors.New("not allowed")

// source is where a transfer reads from.
type source struct {
	display string
	// size is -1 when unknown (an https source without Content-Length).
	size int64
	// fingerprint changes when the source's bytes may have changed; a
	// checkpoint with another fingerprint is abandoned.
	fingerprint string
	// headers the destination gets unless the task says otherwise: all of
	// an S3 source's (a copy keeps the object), an https source's
	// Content-Type.
	headers  storage.Headers
	metadata map[string]string
	// record is what ferry records about the source on the object it
	// writes: a file's size and mtime, by which a migration of its tree
	// later finds the object identical without reading the file.
	record map[string]string
	etag   string
	// parts reads parts by offset; nil when the source can only stream.
	parts storage.PartSource
	// open streams the whole source.
	open func(ctx context.Context) (io.ReadCloser, error)
	// verify, when set, reports (wrapping storage.ErrSourceChanged) that
	// the source may have changed since it was opened, so bytes read from
	// it may mix two versions. Sources whose every read is pinned to one
	// version (S3 If-Match, https validators) need none.
	verify func() error
	// checksum, when set, reads the whole source for its checksum: what a
	// multipart upload records before its first part (a file; nil for
	// sources a second read would cost a second download).
	checksum func(ctx context.Context) (storage.Checksum, error)
	// expect, when set, checks the whole source's bytes against what the
	// source records about them (an S3 object's CRC32C or plain-MD5 ETag):
	// the one-part path reads them into one buffer.
	expect func(b []byte) error
	// etagCheck, when set, is the ETag the whole source's bytes must give: an
	// S3 object that records no CRC32C but has a plain-MD5 ETag, or a
	// multipart ETag whose part sizes the server told. A multipart upload
	// of it hashes its parts in order (PartsOptions.InOrder) and checks
	// the ETag before Complete.
	etagCheck *storage.ETagCheck
	// unverified says why an S3 source's bytes cannot be checked as they
	// are read (it records no checksum and its ETag cannot be recomputed);
	// empty otherwise.
	unverified string
	close      func() error
}

func (s *source) Close() error {
	if s.close != nil {
		return s.close()
	}
	return nil
}

// check is called after the last byte is read and before the object is
// made visible (Complete, or the single PutObject): a source that changed
// meanwhile fails the attempt instead of completing a mixed object.
func (s *source) check() error {
	if s.verify == nil {
		return nil
	}
	return s.verify()
}

// sources opens sources within the worker's allowed directories and hosts.
type sources struct {
	roots map[string]*os.Root // allowed directory → root
	dirs  []string
	hosts []string
	http  *http.Client
}

func newSources(dirs, hosts []string, hc *http.Client) (*sources, error) {
	// A copy of the client that follows redirects only to allowed https
	// hosts: the allowlist must hold for every hop, or a redirect could
	// reach any host (a cloud metadata endpoint, say).
	client := *hc
	client.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Scheme != "https" || !slices.Contains(hosts, r.URL.Hostname()) {
			return fmt.Errorf("redirect to %s://%s: %w (not on allow_url_hosts)", r.URL.Scheme, r.URL.Host, errNotAllowed)
		}
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		return nil
	}
	s := &sources{roots: map[string]*os.Root{}, hosts: hosts, http: &client}
	for _, d := range dirs {
		r, err := os.OpenRoot(d)
		if err != nil {
			return nil, fmt.Errorf("worker config: allow_dirs: %w", err)
		}
		s.roots[d] = r
		s.dirs = append(s.dirs, d)
	}
	// Longest first, so nested allowed directories resolve to the deepest.
	slices.SortFunc(s.dirs, func(a, b string) int { return len(b) - len(a) })
	return s, nil
}

// allowedDir returns the first allowed directory holding the absolute path
// p, and p relative to it; false when none does.
func (s *sources) allowedDir(p string) (dir, rel string, ok bool) {
	for _, d := range s.dirs {
		rel, err := filepath.Rel(d, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		return d, rel, true
	}
	return "", "", false
}

// errSymlink: a component of a path opened with noFollow is a symlink.
var errSymlink = errors.New("is a symlink")

// openFile opens an absolute path through the os.Root of the allowed
// directory containing it: ".." and symlinks cannot leave that directory.
// With noFollow (a migrated tree's file) no symlink is followed at all: a
// path that holds one now is storage.ErrSourceChanged, permanent.
func (s *sources) openFile(path string, noFollow bool) (*source, error) {
	if len(s.dirs) == 0 {
		return nil, fmt.Errorf("source %s: local files are %w on this worker: start it with --allow-dir DIR", path, errNotAllowed)
	}
	if d, rel, ok := s.allowedDir(path); ok {
		// O_NONBLOCK: opening a FIFO would block until a writer appears,
		// holding a worker slot until the task's timeout. It changes
		// nothing for regular files; anything else is refused below.
		var f *os.File
		var err error
		if noFollow {
			f, err = openNoFollow(s.roots[d], rel)
		} else {
			f, err = s.roots[d].OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		}
		if err != nil {
			if errors.Is(err, errSymlink) {
				// The walk saw a regular file under directories: the
				// retry would find the same symlink, and the next run
				// passes it over as one.
				return nil, permanent(fmt.Errorf("source %s: %w since the tree was walked, and ferry does not follow symlinks in a migrated tree: %w", path, err, storage.ErrSourceChanged))
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("source file %s does not exist: %w", path, storage.ErrNotFound)
			}
			if strings.Contains(err.Error(), "escapes from parent") || strings.Contains(err.Error(), "path escapes") {
				return nil, fmt.Errorf("source %s leaves the allowed directory %s through a symlink or \"..\": %w", path, d, errNotAllowed)
			}
			if errors.Is(err, fs.ErrPermission) {
				// Permanent: retrying does not make a file readable.
				return nil, fmt.Errorf("source file %s cannot be read by the worker (%w): %w", path, err, storage.ErrPermission)
			}
			return nil, fmt.Errorf("open source %s: %w", path, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stat source %s: %w", path, err)
		}
		if !st.Mode().IsRegular() {
			f.Close()
			return nil, fmt.Errorf("source %s is not a regular file: %w", path, errNotAllowed)
		}
		v := versionOf(st)
		root := s.roots[d]
		return &source{display: path, size: st.Size(), fingerprint: v.fingerprint(), record: v.record(),
			parts: storage.ReaderAtSource(f, st.Size()),
			open: func(context.Context) (io.ReadCloser, error) {
				return io.NopCloser(io.NewSectionReader(f, 0, st.Size())), nil
			},
			verify: func() error { return v.unchanged(path, f, root, rel) },
			checksum: func(ctx context.Context) (storage.Checksum, error) {
				return storage.ChecksumReaderAt(ctx, f, st.Size())
			},
			close: f.Close}, nil
	}
	return nil, fmt.Errorf("source %s is outside the worker's allowed directories (%s): %w; add --allow-dir or move the file",
		path, strings.Join(s.dirs, ", "), errNotAllowed)
}

// fileVersion identifies one version of a local file. Size and mtime alone
// miss a file replaced by another of the same size with its mtime restored
// (rsync -t, cp -p, tar x): the inode catches the replacement, and the
// ctime, which nothing can set back, an in-place rewrite that restored the
// mtime.
type fileVersion struct {
	size  int64
	mtime int64 // ns
	ctime int64 // ns; 0 where unknown
	inode uint64
}

func versionOf(st fs.FileInfo) fileVersion {
	ino, ctime := fileIdentity(st)
	return fileVersion{size: st.Size(), mtime: st.ModTime().UnixNano(), ctime: ctime, inode: ino}
}

// fingerprint is the checkpoint's source fingerprint: a resume whose file
// has another one starts over.
func (v fileVersion) fingerprint() string {
	return fmt.Sprintf("file:%d:%d:%d:%d", v.size, v.mtime, v.ctime, v.inode)
}

// record is what an object written from this version records about it.
func (v fileVersion) record() map[string]string {
	return map[string]string{metaSourceSize: strconv.FormatInt(v.size, 10), metaSourceMtime: strconv.FormatInt(v.mtime, 10)}
}

// unchanged checks the path (replaced or removed?) and the open file
// (written in place?) against v.
func (v fileVersion) unchanged(path string, f *os.File, root *os.Root, rel string) error {
	st, err := root.Stat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("source file %s was removed while it was read: %w", path, storage.ErrSourceChanged)
	}
	if err == nil {
		st2, err2 := f.Stat()
		if err2 == nil && versionOf(st) == v {
			st = st2 // the path is the file read: did it change under us?
		}
		err = err2
	}
	if err != nil {
		return fmt.Errorf("stat source %s: %w", path, err)
	}
	if now := versionOf(st); now != v {
		how := "written"
		if now.inode != v.inode {
			how = "replaced"
		}
		return fmt.Errorf("source file %s was %s while it was read (%s): %w", path, how, v.diff(now), storage.ErrSourceChanged)
	}
	return nil
}

// diff says what differs between v and now, for an error message.
func (v fileVersion) diff(now fileVersion) string {
	var d []string
	if v.size != now.size {
		d = append(d, fmt.Sprintf("size %d, now %d", v.size, now.size))
	}
	if v.mtime != now.mtime {
		d = append(d, fmt.Sprintf("mtime %s, now %s", time.Unix(0, v.mtime).UTC().Format(time.RFC3339Nano), time.Unix(0, now.mtime).UTC().Format(time.RFC3339Nano)))
	}
	if v.inode != now.inode {
		d = append(d, fmt.Sprintf("inode %d, now %d", v.inode, now.inode))
	}
	if len(d) == 0 && v.ctime != now.ctime {
		d = append(d, "ctime changed")
	}
	return strings.Join(d, "; ")
}

// openHTTP checks the host against the allowlist and HEADs the URL.
func (s *sources) openHTTP(ctx context.Context, raw string) (*source, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// Not err itself: it quotes the whole URL, signature included.
		return nil, fmt.Errorf("source URL does not parse: %w", errNotAllowed)
	}
	if !slices.Contains(s.hosts, u.Hostname()) {
		return nil, fmt.Errorf("source host %q is %w: the worker's allow_url_hosts are [%s]", u.Hostname(), errNotAllowed, strings.Join(s.hosts, ", "))
	}
	h := &httpVersion{client: s.http, raw: raw, display: u.Scheme + "://" + u.Host + u.Path} // no query: it may hold a signature
	resp, err := h.do(ctx, http.MethodHead, "")
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	h.etag, h.lastModified, h.size = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), resp.ContentLength
	src := &source{display: h.display, size: h.size, headers: storage.Headers{ContentType: resp.Header.Get("Content-Type")},
		fingerprint: fmt.Sprintf("http:%s|%s|%d", h.etag, h.lastModified, h.size), open: h.open}
	if h.size >= 0 && resp.Header.Get("Accept-Ranges") == "bytes" {
		src.parts = &rangeSource{size: h.size, get: h.getRange}
	}
	return src, nil
}

// httpVersion is one version of an https source: the one its HEAD
// described. Every GET is checked against it, so the parts of an upload
// never mix two versions, and no body longer or shorter than announced is
// ever taken for the source.
type httpVersion struct {
	client       *http.Client
	raw, display string
	// etag and lastModified are the HEAD's validators ("" when absent);
	// size is its Content-Length, -1 when unknown.
	etag, lastModified string
	size               int64
}

// do sends one request. Accept-Encoding: identity asks for the stored
// bytes: Go's transport would otherwise ask for gzip on a plain GET, and a
// compressing server (nginx gzip, Caddy encode) answers that with another
// representation, another (weak or suffixed) ETag and no length.
func (h *httpVersion) do(ctx context.Context, method, rng string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, h.raw, nil)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", h.display, err)
	}
	req.Header.Set("Accept-Encoding", "identity")
	if rng != "" {
		req.Header.Set("Range", rng)
		// If-Range needs a strong validator: with a weak one a server must
		// ignore the Range and send the whole body (RFC 9110 13.1.5). Weak
		// or absent, the answer's own validators are checked instead.
		if h.strongETag() {
			req.Header.Set("If-Range", h.etag)
		}
	}
	r, err := h.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, h.display, redactURLError(err))
	}
	if err := httpStatusError(h.display, r.StatusCode); err != nil {
		r.Body.Close()
		return nil, err
	}
	return r, nil
}

func (h *httpVersion) strongETag() bool { return h.etag != "" && !strings.HasPrefix(h.etag, "W/") }

// open GETs the whole source, checked to be the HEAD's version, its body
// exactly as long as announced.
func (h *httpVersion) open(ctx context.Context) (io.ReadCloser, error) {
	r, err := h.do(ctx, http.MethodGet, "")
	if err != nil {
		return nil, err
	}
	if err := h.sameVersion(r, "GET"); err != nil {
		r.Body.Close()
		return nil, err
	}
	if h.size < 0 {
		// Only the answer's own length is known: the transport holds the
		// body to it, exactBody keeps a cut from passing for the end.
		return &exactBody{rc: r.Body, want: r.ContentLength}, nil
	}
	if r.ContentLength >= 0 && r.ContentLength != h.size {
		r.Body.Close()
		return nil, h.changed("GET", fmt.Sprintf("Content-Length %d, HEAD said %d", r.ContentLength, h.size))
	}
	return &exactBody{rc: r.Body, want: h.size, changed: true}, nil
}

// getRange GETs n bytes at off: the answer must be 206 for exactly that
// range of the HEAD's version, with a body of exactly n bytes.
func (h *httpVersion) getRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	rng := "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+n-1, 10)
	r, err := h.do(ctx, http.MethodGet, rng)
	if err != nil {
		return nil, err
	}
	op := "GET " + rng
	if err := h.checkRange(r, op, off, n); err != nil {
		r.Body.Close()
		return nil, err
	}
	return &exactBody{rc: r.Body, want: n}, nil
}

func (h *httpVersion) checkRange(r *http.Response, op string, off, n int64) error {
	if err := h.sameVersion(r, op); err != nil {
		return err
	}
	if r.StatusCode != http.StatusPartialContent {
		if h.strongETag() && r.Header.Get("ETag") == "" {
			// The If-Range no longer matched (a different ETag is caught
			// by sameVersion, the same one means the range was ignored).
			return h.changed(op, fmt.Sprintf("status %d to If-Range %s", r.StatusCode, h.etag))
		}
		return fmt.Errorf("%s %s: status %d: the server ignored the range it advertised (Accept-Ranges: bytes)", op, h.display, r.StatusCode)
	}
	first, last, total, ok := parseContentRange(r.Header.Get("Content-Range"))
	switch {
	case !ok:
		return fmt.Errorf("%s %s: 206 with Content-Range %q: cannot tell which bytes these are", op, h.display, r.Header.Get("Content-Range"))
	case total >= 0 && total != h.size:
		return h.changed(op, fmt.Sprintf("length %d, HEAD said %d", total, h.size))
	case first != off || last != off+n-1:
		return fmt.Errorf("%s %s: the server sent bytes %d-%d instead", op, h.display, first, last)
	case r.ContentLength >= 0 && r.ContentLength != n:
		return fmt.Errorf("%s %s: 206 with Content-Length %d for %d bytes", op, h.display, r.ContentLength, n)
	}
	return nil
}

// sameVersion compares the validators of an answer with the HEAD's. An
// ETag is compared whether weak or strong: a different one, of either
// kind, is another version. A validator the answer leaves out cannot be
// compared; the length still is.
func (h *httpVersion) sameVersion(r *http.Response, op string) error {
	if et := r.Header.Get("ETag"); h.etag != "" && et != "" && et != h.etag {
		return h.changed(op, fmt.Sprintf("ETag %s, HEAD said %s", et, h.etag))
	}
	if lm := r.Header.Get("Last-Modified"); h.lastModified != "" && lm != "" && lm != h.lastModified {
		return h.changed(op, fmt.Sprintf("Last-Modified %s, HEAD said %s", lm, h.lastModified))
	}
	return nil
}

func (h *httpVersion) changed(op, what string) error {
	return fmt.Errorf("%s %s: %s: %w", op, h.display, what, storage.ErrSourceChanged)
}

// parseContentRange parses "bytes first-last/total"; total is -1 for "*".
func parseContentRange(v string) (first, last, total int64, ok bool) {
	spec, found := strings.CutPrefix(v, "bytes ")
	rng, size, found2 := strings.Cut(spec, "/")
	a, b, found3 := strings.Cut(rng, "-")
	if !found || !found2 || !found3 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseInt(a, 10, 64)
	last, err2 = strconv.ParseInt(b, 10, 64)
	total = -1
	if size != "*" {
		total, err3 = strconv.ParseInt(size, 10, 64)
	}
	return first, last, total, err1 == nil && err2 == nil && err3 == nil && first <= last
}

// exactBody fails a body that ends before want bytes or runs past them
// (want < 0: unknown, any length goes). Its errors never wrap io.EOF or
// io.ErrUnexpectedEOF, which a stream reader would take for the end of the
// source: a cut connection must fail the transfer, not end it.
type exactBody struct {
	rc   io.ReadCloser
	want int64
	got  int64
	// changed: the announced length is the source's own (HEAD), so a
	// complete body of another length is another version of the source.
	changed bool
}

func (b *exactBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.got += int64(n)
	if b.want >= 0 && b.got > b.want {
		return n - int(b.got-b.want), b.lengthError(fmt.Sprintf("the source's body runs past the %d bytes announced", b.want))
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The transport saw the connection end inside the announced body.
		if b.want < 0 {
			return n, fmt.Errorf("the connection ended inside the body, after %d bytes", b.got)
		}
		return n, fmt.Errorf("the connection ended after %d of the %d bytes announced", b.got, b.want)
	case err == io.EOF && b.want >= 0 && b.got < b.want:
		return n, b.lengthError(fmt.Sprintf("the source's body ended after %d of the %d bytes announced", b.got, b.want))
	}
	return n, err
}

func (b *exactBody) lengthError(what string) error {
	if b.changed {
		return fmt.Errorf("%s: %w", what, storage.ErrSourceChanged)
	}
	return errors.New(what)
}

func (b *exactBody) Close() error { return b.rc.Close() }

func httpStatusError(display string, code int) error {
	switch {
	case code == http.StatusNotFound || code == http.StatusGone:
		return fmt.Errorf("source %s: HTTP %d: %w", display, code, storage.ErrNotFound)
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return fmt.Errorf("source %s: HTTP %d: %w", display, code, storage.ErrPermission)
	case code >= 400:
		return fmt.Errorf("source %s: HTTP %d", display, code)
	}
	return nil
}

// redactURLError drops the URL (which may carry a signature) from a
// transport error.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// openS3 opens an S3 object as a source: ranged GETs by part.
func openS3(ctx context.Context, s *storage.S3, key string) (*source, error) {
	info, err := s.Info(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return s3Source(ctx, s, key, info)
}

// s3Object is what a source read from S3 (s3Source) uses of its bucket:
// reads of the object, whole or by range pinned to one version, and what
// its bytes can be checked against. *storage.S3 satisfies it.
type s3Object interface {
	Bucket() string
	Client() *storage.Client
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	GetRangeIfMatch(ctx context.Context, key, etag string, offset, length int64) (io.ReadCloser, storage.StoredFile, error)
	ETagCheck(ctx context.Context, f storage.StoredFile) (*storage.ETagCheck, string, error)
}

// s3Source is openS3 for an object whose Info the caller has. With
// integrity on, the bytes read are checked against what the object
// records: its CRC32C, else its ETag (storage.S3.ETagCheck, which may
// HEAD each part of a multipart object to learn where its parts end).
func s3Source(ctx context.Context, s s3Object, key string, info storage.StoredFile) (*source, error) {
	display := "s3://" + s.Bucket() + "/" + key
	src := &source{display: display, size: info.Size, etag: info.ETag, headers: info.Headers, metadata: info.Metadata,
		fingerprint: fmt.Sprintf("s3:%s:%d", info.ETag, info.Size),
		// Every part is read from the version the transfer started with.
		parts: &rangeSource{size: info.Size, get: func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			rc, _, err := s.GetRangeIfMatch(ctx, key, info.ETag, off, n)
			return rc, err
		}},
		open: func(ctx context.Context) (io.ReadCloser, error) { return s.Get(ctx, key) },
	}
	if !s.Client().Integrity() {
		return src, nil
	}
	src.expect = func(b []byte) error { return info.Verify("read "+display, b) }
	if info.Checksum != "" {
		return src, nil
	}
	check, why, err := s.ETagCheck(ctx, info)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	src.etagCheck, src.unverified = check, why
	if check != nil {
		src.expect = func(b []byte) error { return check.Verify("read "+display, b) }
	}
	return src, nil
}

// rangeSource reads parts of a remote object with one ranged GET each, so
// parts download concurrently.
type rangeSource struct {
	size int64
	get  func(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

func (r *rangeSource) Sequential() bool { return false }

// rangeReads bounds the GETs of one part whose body broke off.
const rangeReads = 3

// ReadPart reads part n with a ranged GET. A body that breaks off (the
// connection reset, or closed before the range's end) is asked for again,
// rangeReads GETs in all: the SDK retries a request that fails, not a body
// that stops midway, and the break cost the whole task an attempt (the
// S3 fault suite's resets mid-response, 2026-12-01). The bytes read again
// are checked as any are (the part's and the object's checksums).
func (r *rangeSource) ReadPart(ctx context.Context, n int, buf []byte) (int, error) {
	off := int64(n-1) * int64(len(buf))
	if off >= r.size {
		return 0, io.EOF
	}
	want := min(int64(len(buf)), r.size-off)
	for get := 1; ; get++ {
		rc, err := r.get(ctx, off, want)
		if err != nil {
			return 0, err // a failed request: the SDK has retried it already
		}
		got, err := readExactly(rc, buf[:want])
		_ = rc.Close()
		if err == nil {
			return got, nil
		}
		if !brokenBody(err) || get == rangeReads || ctx.Err() != nil {
			return got, fmt.Errorf("read part %d: %w", n, err)
		}
	}
}

// brokenBody reports whether err, from reading a body, is one that stopped
// before its end: the connection reset or closed early.
func brokenBody(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// openedBody is a one-part source whose body a GET has opened already:
// the first read of part 1 takes it; any other read goes to again.
type openedBody struct {
	rc    io.ReadCloser
	size  int64
	taken bool
	again storage.PartSource
}

func (o *openedBody) Sequential() bool { return false }

func (o *openedBody) ReadPart(ctx context.Context, n int, buf []byte) (int, error) {
	if o.taken || n != 1 || int64(len(buf)) < o.size {
		return o.again.ReadPart(ctx, n, buf)
	}
	o.taken = true
	got, err := readExactly(o.rc, buf[:o.size])
	if err != nil {
		return got, fmt.Errorf("read part %d: %w", n, err)
	}
	return got, nil
}

// readExactly fills buf from r and then expects r to end: a body longer
// than the bytes asked for is an error, not a silent truncation.
func readExactly(r io.Reader, buf []byte) (int, error) {
	got, err := io.ReadFull(r, buf)
	if err != nil {
		return got, err
	}
	var one [1]byte
	switch _, err := io.ReadFull(r, one[:]); {
	case err == nil:
		return got, fmt.Errorf("the body is longer than the %d bytes expected", len(buf))
	case err != io.EOF:
		return got, err
	}
	return got, nil
}

// openSource opens any non-inline source location.
func (w *Worker) openSource(ctx context.Context, loc tasks.Location) (*source, error) {
	switch loc.Kind() {
	case tasks.KindFile:
		return w.sources.openFile(loc.Path, loc.NoFollow)
	case tasks.KindHTTP:
		return w.sources.openHTTP(ctx, loc.URL)
	case tasks.KindS3:
		s, err := w.profiles.open(ctx, loc.Profile, loc.Bucket)
		if err != nil {
			return nil, err
		}
		return openS3(ctx, s, loc.Key)
	}
	return nil, permanent(fmt.Errorf("source %s cannot be streamed", loc.String()))
}

// maxSourceRestarts bounds how often one task starts over because its
// source changed while it was read. Starting over is right for a file
// replaced once (the retry uploads the new version), but a file still being
// written (a log, a download in progress) would be read whole on every
// attempt until the task ran out of retries; after this many restarts the
// task is archived with a reason instead.
const maxSourceRestarts = 3

// sourceChangedTTL keeps a task's restart counts across its retries.
const sourceChangedTTL = 24 * time.Hour

// sourceChanged counts a restart of task id whose source changed (err wraps
// storage.ErrSourceChanged; the upload is already aborted) and decides:
// retry from scratch, or archive once the restarts are used up.
func (w *Worker) sourceChanged(ctx context.Context, id string, err error) error {
	return w.restart(ctx, id, err, sourceChangesKey(id), maxSourceRestarts,
		"source changed during the transfer; the task starts over on its retry",
		"it changed during %d attempts, so it is probably still being written: enqueue it again once it is complete")
}

// maxIntegrityRestarts bounds how often one task starts over because the
// bytes it read did not match the checksum recorded for them (a bit
// flipped on the way from the source): a retry reads them again, but a
// path that corrupts every read, or a source whose stored bytes no longer
// match their checksum, must fail with the reason rather than retry for
// hours.
const maxIntegrityRestarts = 3

// integrityFailed counts a restart of task id whose read bytes failed
// their checksum (err wraps storage.ErrIntegrity and is not permanent; any
// upload is already aborted) and decides: retry, or archive.
func (w *Worker) integrityFailed(ctx context.Context, id string, err error) error {
	return w.restart(ctx, id, err, integrityFailuresKey(id), maxIntegrityRestarts,
		"bytes read from the source failed their checksum; the task reads them again on its retry",
		"the bytes read failed their checksum on %d attempts: the source's stored bytes do not match what it records, or the path from it corrupts data")
}

// restart counts one restart of task id in the Redis counter key (kept a
// day after the last one) and returns err to retry, or err made permanent
// with giveUp (formatted with the count) once there were more than limit.
func (w *Worker) restart(ctx context.Context, id string, err error, key string, limit int64, logMsg, giveUp string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var incr *redis.IntCmd
	_, rerr := w.rdb.TxPipelined(rctx, func(p redis.Pipeliner) error {
		incr = p.Incr(rctx, key)
		p.Expire(rctx, key, sourceChangedTTL)
		return nil
	})
	if rerr != nil {
		// The bound is lost for this attempt; asynq's MaxRetry still holds.
		w.log.Warn("could not count a restart", zap.String("task_id", id), zap.String("key", key), zap.Error(rerr))
		return err
	}
	if n := incr.Val(); n > limit {
		return permanent(fmt.Errorf("%w; "+giveUp, err, n))
	}
	w.log.Info(logMsg, zap.String("task_id", id), zap.Int64("restart", incr.Val()), zap.Int64("max_restarts", limit), zap.Error(err))
	return fmt.Errorf("%w (the task starts over: restart %d of %d)", err, incr.Val(), limit)
}
