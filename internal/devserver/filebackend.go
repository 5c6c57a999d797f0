package devserver

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
)

// fileBackend is a gofakes3 Backend (and MultipartBackend) keeping buckets,
// objects and unfinished multipart uploads in a directory, so that they
// survive a restart:
//
//	<root>/buckets/<bucket>/<sha256(key)>        object data
//	<root>/buckets/<bucket>/<sha256(key)>.json   key, size, md5, metadata, mtime
//	<root>/uploads/<upload id>/upload.json       bucket, key, metadata
//	<root>/uploads/<upload id>/<part number>     part data (+ .json: etag, size)
//
// Keys are hashed into file names, so any key (with "/", "..", a key that is
// also a "directory" of another) maps to one flat file. An in-memory index,
// rebuilt from the .json files at start, answers listings. Writes go to a
// temporary file renamed into place: a crash leaves the old object or the
// new one, never half of one. It is for ferry dev: one process, modest sizes.
type fileBackend struct {
	root string

	mu      sync.RWMutex
	buckets map[string]*fsBucket
	uploads map[gofakes3.UploadID]*fsUpload
}

type fsBucket struct {
	Created time.Time `json:"created"`
	objects map[string]*fsObject
}

// fsObject is an object's .json sidecar.
type fsObject struct {
	Key      string            `json:"key"`
	Size     int64             `json:"size"`
	MD5      string            `json:"md5"` // hex; the ETag
	Metadata map[string]string `json:"metadata"`
	Modified time.Time         `json:"modified"`
}

type fsUpload struct {
	ID        gofakes3.UploadID `json:"id"`
	Bucket    string            `json:"bucket"`
	Key       string            `json:"key"`
	Metadata  map[string]string `json:"metadata"`
	Initiated time.Time         `json:"initiated"`
	parts     map[int]*fsPart
}

type fsPart struct {
	ETag     string    `json:"etag"` // quoted
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

var (
	_ gofakes3.Backend          = (*fileBackend)(nil)
	_ gofakes3.MultipartBackend = (*fileBackend)(nil)
)

// newFileBackend opens (creating it if needed) the store under root and
// loads its index.
func newFileBackend(root string) (*fileBackend, error) {
	b := &fileBackend{root: root, buckets: map[string]*fsBucket{}, uploads: map[gofakes3.UploadID]*fsUpload{}}
	for _, d := range []string{b.bucketsDir(), b.uploadsDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, err
		}
	}
	if err := b.load(); err != nil {
		return nil, fmt.Errorf("load S3 data under %s: %w", root, err)
	}
	return b, nil
}

func (b *fileBackend) bucketsDir() string { return filepath.Join(b.root, "buckets") }
func (b *fileBackend) uploadsDir() string { return filepath.Join(b.root, "uploads") }
func (b *fileBackend) bucketDir(bucket string) string {
	return filepath.Join(b.bucketsDir(), bucket)
}

func (b *fileBackend) objectPath(bucket, key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(b.bucketDir(bucket), hex.EncodeToString(sum[:]))
}

func (b *fileBackend) uploadDir(id gofakes3.UploadID) string {
	return filepath.Join(b.uploadsDir(), string(id))
}

func (b *fileBackend) partPath(id gofakes3.UploadID, n int) string {
	return filepath.Join(b.uploadDir(id), strconv.Itoa(n))
}

func (b *fileBackend) load() error {
	cleanStale(b.root)
	ents, err := os.ReadDir(b.bucketsDir())
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		bk := &fsBucket{objects: map[string]*fsObject{}}
		if err := readJSON(filepath.Join(b.bucketDir(e.Name()), "bucket.json"), bk); err != nil {
			return err
		}
		files, err := os.ReadDir(b.bucketDir(e.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			name := f.Name()
			if !strings.HasSuffix(name, ".json") || name == "bucket.json" {
				continue
			}
			var o fsObject
			if err := readJSON(filepath.Join(b.bucketDir(e.Name()), name), &o); err != nil {
				return err
			}
			bk.objects[o.Key] = &o
		}
		b.buckets[e.Name()] = bk
	}
	ups, err := os.ReadDir(b.uploadsDir())
	if err != nil {
		return err
	}
	for _, e := range ups {
		if !e.IsDir() {
			continue
		}
		u := &fsUpload{parts: map[int]*fsPart{}}
		if err := readJSON(filepath.Join(b.uploadsDir(), e.Name(), "upload.json"), u); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				_ = os.RemoveAll(filepath.Join(b.uploadsDir(), e.Name())) // created, never described
				continue
			}
			return err
		}
		files, err := os.ReadDir(b.uploadDir(u.ID))
		if err != nil {
			return err
		}
		for _, f := range files {
			num, ok := strings.CutSuffix(f.Name(), ".json")
			n, err := strconv.Atoi(num)
			if !ok || err != nil {
				continue
			}
			var p fsPart
			if err := readJSON(filepath.Join(b.uploadDir(u.ID), f.Name()), &p); err != nil {
				return err
			}
			u.parts[n] = &p
		}
		b.uploads[u.ID] = u
	}
	return nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSON writes v to path atomically.
func writeJSON(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp" + randomHex(4)
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeTemp copies r (size bytes, or to EOF when size < 0) into a temporary
// file in dir and returns its path, size and the MD5 of its content.
func writeTemp(dir string, r io.Reader, size int64) (path string, n int64, sum []byte, err error) {
	f, err := os.CreateTemp(dir, ".incoming-*")
	if err != nil {
		return "", 0, nil, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	h := md5.New()
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size)
	}
	n, err = io.Copy(io.MultiWriter(f, h), src)
	if err != nil {
		return "", 0, nil, err
	}
	if size >= 0 && n != size {
		return "", 0, nil, gofakes3.ErrIncompleteBody
	}
	if err := f.Close(); err != nil {
		return "", 0, nil, err
	}
	return f.Name(), n, h.Sum(nil), nil
}

func cloneMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ListBuckets implements gofakes3.Backend.
func (b *fileBackend) ListBuckets() ([]gofakes3.BucketInfo, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]gofakes3.BucketInfo, 0, len(b.buckets))
	for name, bk := range b.buckets {
		out = append(out, gofakes3.BucketInfo{Name: name, CreationDate: gofakes3.NewContentTime(bk.Created)})
	}
	slices.SortFunc(out, func(x, y gofakes3.BucketInfo) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// ListBucket implements gofakes3.Backend, with marker pagination.
func (b *fileBackend) ListBucket(name string, prefix *gofakes3.Prefix, page gofakes3.ListBucketPage) (*gofakes3.ObjectList, error) {
	if prefix == nil {
		prefix = &gofakes3.Prefix{}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	bk := b.buckets[name]
	if bk == nil {
		return nil, gofakes3.BucketNotFound(name)
	}
	keys := make([]string, 0, len(bk.objects))
	for k := range bk.objects {
		if page.Marker == "" || k > page.Marker {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	resp := gofakes3.NewObjectList()
	var match gofakes3.PrefixMatch
	var lastPrefix string
	var cnt int64
	for i, k := range keys {
		if !prefix.Match(k, &match) {
			continue
		}
		next := k
		if match.CommonPrefix {
			// A page ending on a common prefix has it as its marker: the
			// next page skips every key under it, as S3 does.
			if match.MatchedPart == lastPrefix || match.MatchedPart == page.Marker {
				continue
			}
			resp.AddPrefix(match.MatchedPart)
			lastPrefix, next = match.MatchedPart, match.MatchedPart
		} else {
			o := bk.objects[k]
			resp.Add(&gofakes3.Content{Key: k, LastModified: gofakes3.NewContentTime(o.Modified),
				ETag: `"` + o.MD5 + `"`, Size: o.Size, StorageClass: "STANDARD"})
		}
		cnt++
		if page.MaxKeys > 0 && cnt >= page.MaxKeys {
			resp.NextMarker = next
			resp.IsTruncated = i < len(keys)-1
			break
		}
	}
	return resp, nil
}

// CreateBucket implements gofakes3.Backend.
func (b *fileBackend) CreateBucket(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buckets[name] != nil {
		return gofakes3.ResourceError(gofakes3.ErrBucketAlreadyExists, name)
	}
	bk := &fsBucket{Created: time.Now().UTC(), objects: map[string]*fsObject{}}
	if err := os.MkdirAll(b.bucketDir(name), 0o750); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(b.bucketDir(name), "bucket.json"), bk); err != nil {
		return err
	}
	b.buckets[name] = bk
	return nil
}

// BucketExists implements gofakes3.Backend.
func (b *fileBackend) BucketExists(name string) (bool, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.buckets[name] != nil, nil
}

// DeleteBucket implements gofakes3.Backend.
func (b *fileBackend) DeleteBucket(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	bk := b.buckets[name]
	if bk == nil {
		return gofakes3.BucketNotFound(name)
	}
	if len(bk.objects) > 0 {
		return gofakes3.ResourceError(gofakes3.ErrBucketNotEmpty, name)
	}
	delete(b.buckets, name)
	return os.RemoveAll(b.bucketDir(name))
}

// ForceDeleteBucket implements gofakes3.Backend.
func (b *fileBackend) ForceDeleteBucket(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buckets[name] == nil {
		return gofakes3.BucketNotFound(name)
	}
	delete(b.buckets, name)
	return os.RemoveAll(b.bucketDir(name))
}

// object returns the index entry of bucket/key, or a gofakes3 not-found
// error. b.mu is held.
func (b *fileBackend) object(bucket, key string) (*fsObject, error) {
	bk := b.buckets[bucket]
	if bk == nil {
		return nil, gofakes3.BucketNotFound(bucket)
	}
	o := bk.objects[key]
	if o == nil {
		return nil, gofakes3.KeyNotFound(key)
	}
	return o, nil
}

func (o *fsObject) toObject() (*gofakes3.Object, error) {
	sum, err := hex.DecodeString(o.MD5)
	if err != nil {
		return nil, err
	}
	return &gofakes3.Object{Name: o.Key, Metadata: cloneMeta(o.Metadata), Size: o.Size, Hash: sum,
		Contents: io.NopCloser(strings.NewReader(""))}, nil
}

// HeadObject implements gofakes3.Backend.
func (b *fileBackend) HeadObject(bucket, key string) (*gofakes3.Object, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	o, err := b.object(bucket, key)
	if err != nil {
		return nil, err
	}
	return o.toObject()
}

// GetObject implements gofakes3.Backend, with ranges.
func (b *fileBackend) GetObject(bucket, key string, rng *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	b.mu.RLock()
	o, err := b.object(bucket, key)
	var f *os.File
	if err == nil {
		// Open under the lock: a concurrent overwrite renames a new file
		// into place, and the open file keeps the old content.
		f, err = os.Open(b.objectPath(bucket, key))
	}
	b.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	obj, err := o.toObject()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	r, err := rng.Range(o.Size)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	obj.Range = r
	if r == nil {
		obj.Contents = f
		return obj, nil
	}
	if _, err := f.Seek(r.Start, io.SeekStart); err != nil {
		_ = f.Close()
		return nil, err
	}
	obj.Contents = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, r.Length), f}
	return obj, nil
}

// PutObject implements gofakes3.Backend: the body streams to disk.
func (b *fileBackend) PutObject(bucket, key string, meta map[string]string, input io.Reader, size int64, cond *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
	var res gofakes3.PutObjectResult
	if ok, _ := b.BucketExists(bucket); !ok {
		return res, gofakes3.BucketNotFound(bucket)
	}
	tmp, n, sum, err := writeTemp(b.bucketDir(bucket), input, size)
	if err != nil {
		return res, err
	}
	return res, b.commit(bucket, key, meta, tmp, n, sum, cond)
}

// commit renames the temporary file tmp into place as bucket/key.
func (b *fileBackend) commit(bucket, key string, meta map[string]string, tmp string, n int64, sum []byte, cond *gofakes3.PutConditions) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	fail := func(err error) error { _ = os.Remove(tmp); return err }
	bk := b.buckets[bucket]
	if bk == nil {
		return fail(gofakes3.BucketNotFound(bucket))
	}
	if cond != nil {
		info := &gofakes3.ConditionalObjectInfo{}
		if old := bk.objects[key]; old != nil {
			info.Exists = true
			info.Hash, _ = hex.DecodeString(old.MD5)
		}
		if err := gofakes3.CheckPutConditions(cond, info); err != nil {
			return fail(err)
		}
	}
	o := &fsObject{Key: key, Size: n, MD5: hex.EncodeToString(sum), Metadata: cloneMeta(meta), Modified: time.Now().UTC()}
	p := b.objectPath(bucket, key)
	if err := os.Rename(tmp, p); err != nil {
		return fail(err)
	}
	if err := writeJSON(p+".json", o); err != nil {
		return err
	}
	bk.objects[key] = o
	return nil
}

// DeleteObject implements gofakes3.Backend; a missing key is not an error.
func (b *fileBackend) DeleteObject(bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return gofakes3.ObjectDeleteResult{}, b.deleteLocked(bucket, key)
}

func (b *fileBackend) deleteLocked(bucket, key string) error {
	bk := b.buckets[bucket]
	if bk == nil {
		return gofakes3.BucketNotFound(bucket)
	}
	if bk.objects[key] == nil {
		return nil
	}
	p := b.objectPath(bucket, key)
	// The sidecar goes first: without it the object is not in the index.
	if err := os.Remove(p + ".json"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	delete(bk.objects, key)
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// DeleteMulti implements gofakes3.Backend.
func (b *fileBackend) DeleteMulti(bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	var res gofakes3.MultiDeleteResult
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buckets[bucket] == nil {
		return res, gofakes3.BucketNotFound(bucket)
	}
	for _, k := range keys {
		if err := b.deleteLocked(bucket, k); err != nil {
			res.Error = append(res.Error, gofakes3.ErrorResultFromError(err))
			continue
		}
		res.Deleted = append(res.Deleted, gofakes3.ObjectID{Key: k})
	}
	return res, nil
}

// CopyObject implements gofakes3.Backend.
func (b *fileBackend) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	var res gofakes3.CopyObjectResult
	obj, err := b.GetObject(srcBucket, srcKey, nil)
	if err != nil {
		return res, err
	}
	defer obj.Contents.Close()
	if ok, _ := b.BucketExists(dstBucket); !ok {
		return res, gofakes3.BucketNotFound(dstBucket)
	}
	tmp, n, sum, err := writeTemp(b.bucketDir(dstBucket), obj.Contents, obj.Size)
	if err != nil {
		return res, err
	}
	if err := b.commit(dstBucket, dstKey, meta, tmp, n, sum, nil); err != nil {
		return res, err
	}
	res.ETag = gofakes3.FormatETag(sum)
	res.LastModified = gofakes3.NewContentTime(time.Now().UTC())
	return res, nil
}

// CreateMultipartUpload implements gofakes3.MultipartBackend.
func (b *fileBackend) CreateMultipartUpload(bucket, key string, meta map[string]string) (gofakes3.UploadID, error) {
	u := &fsUpload{ID: gofakes3.UploadID(randomHex(16)), Bucket: bucket, Key: key, Metadata: cloneMeta(meta),
		Initiated: time.Now().UTC(), parts: map[int]*fsPart{}}
	if err := os.MkdirAll(b.uploadDir(u.ID), 0o750); err != nil {
		return "", err
	}
	if err := writeJSON(filepath.Join(b.uploadDir(u.ID), "upload.json"), u); err != nil {
		return "", err
	}
	b.mu.Lock()
	b.uploads[u.ID] = u
	b.mu.Unlock()
	return u.ID, nil
}

// upload returns the upload, checking it belongs to bucket/key. b.mu is held.
func (b *fileBackend) upload(bucket, key string, id gofakes3.UploadID) (*fsUpload, error) {
	u := b.uploads[id]
	if u == nil || u.Bucket != bucket || u.Key != key {
		return nil, gofakes3.ErrNoSuchUpload
	}
	return u, nil
}

// UploadPart implements gofakes3.MultipartBackend; a part uploaded again
// replaces the earlier one.
func (b *fileBackend) UploadPart(bucket, key string, id gofakes3.UploadID, n int, size int64, input io.Reader) (string, error) {
	if n < 1 || n > gofakes3.MaxUploadPartNumber {
		return "", gofakes3.ErrInvalidPart
	}
	b.mu.RLock()
	_, err := b.upload(bucket, key, id)
	b.mu.RUnlock()
	if err != nil {
		return "", err
	}
	tmp, got, sum, err := writeTemp(b.uploadDir(id), input, size)
	if err != nil {
		return "", err
	}
	p := &fsPart{ETag: gofakes3.FormatETag(sum), Size: got, Modified: time.Now().UTC()}
	b.mu.Lock()
	defer b.mu.Unlock()
	u, err := b.upload(bucket, key, id) // aborted meanwhile?
	if err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, b.partPath(id, n)); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	if err := writeJSON(b.partPath(id, n)+".json", p); err != nil {
		return "", err
	}
	u.parts[n] = p
	return p.ETag, nil
}

// ListMultipartUploads implements gofakes3.MultipartBackend (prefix and
// key-marker; delimiters are not grouped).
func (b *fileBackend) ListMultipartUploads(bucket string, marker *gofakes3.UploadListMarker, prefix gofakes3.Prefix, limit int64) (*gofakes3.ListMultipartUploadsResult, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.buckets[bucket] == nil {
		return nil, gofakes3.BucketNotFound(bucket)
	}
	var ups []*fsUpload
	for _, u := range b.uploads {
		if u.Bucket == bucket && strings.HasPrefix(u.Key, prefix.Prefix) {
			ups = append(ups, u)
		}
	}
	slices.SortFunc(ups, func(x, y *fsUpload) int {
		if c := strings.Compare(x.Key, y.Key); c != 0 {
			return c
		}
		return x.Initiated.Compare(y.Initiated)
	})
	res := &gofakes3.ListMultipartUploadsResult{Bucket: bucket, Prefix: prefix.Prefix, MaxUploads: limit}
	if marker != nil {
		res.KeyMarker, res.UploadIDMarker = marker.Object, marker.UploadID
		i := slices.IndexFunc(ups, func(u *fsUpload) bool {
			if marker.UploadID == "" {
				return u.Key > marker.Object
			}
			return u.Key == marker.Object && u.ID == marker.UploadID
		})
		switch {
		case i < 0:
			ups = nil
		case marker.UploadID != "":
			ups = ups[i+1:]
		default:
			ups = ups[i:]
		}
	}
	for i, u := range ups {
		if limit > 0 && int64(i) >= limit {
			res.IsTruncated = true
			last := ups[i-1]
			res.NextKeyMarker, res.NextUploadIDMarker = last.Key, last.ID
			break
		}
		res.Uploads = append(res.Uploads, gofakes3.ListMultipartUploadItem{Key: u.Key, UploadID: u.ID,
			StorageClass: "STANDARD", Initiated: gofakes3.NewContentTime(u.Initiated)})
	}
	return res, nil
}

// ListParts implements gofakes3.MultipartBackend: parts after marker, in
// order, at most limit.
func (b *fileBackend) ListParts(bucket, key string, id gofakes3.UploadID, marker int, limit int64) (*gofakes3.ListMultipartUploadPartsResult, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	u, err := b.upload(bucket, key, id)
	if err != nil {
		return nil, err
	}
	nums := make([]int, 0, len(u.parts))
	for n := range u.parts {
		if n > marker {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	res := &gofakes3.ListMultipartUploadPartsResult{Bucket: bucket, Key: key, UploadID: id,
		PartNumberMarker: marker, MaxParts: limit, StorageClass: "STANDARD"}
	for i, n := range nums {
		if limit > 0 && int64(i) >= limit {
			res.IsTruncated = true
			res.NextPartNumberMarker = nums[i-1]
			break
		}
		p := u.parts[n]
		res.Parts = append(res.Parts, gofakes3.ListMultipartUploadPartItem{PartNumber: n, ETag: p.ETag,
			Size: p.Size, LastModified: gofakes3.NewContentTime(p.Modified)})
	}
	return res, nil
}

// AbortMultipartUpload implements gofakes3.MultipartBackend.
func (b *fileBackend) AbortMultipartUpload(bucket, key string, id gofakes3.UploadID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.upload(bucket, key, id); err != nil {
		return err
	}
	delete(b.uploads, id)
	return os.RemoveAll(b.uploadDir(id))
}

// CompleteMultipartUpload implements gofakes3.MultipartBackend: the parts
// are concatenated into the object on disk, never in memory. The returned
// ETag is S3's multipart form, md5(part md5s)-N.
func (b *fileBackend) CompleteMultipartUpload(bucket, key string, id gofakes3.UploadID, in *gofakes3.CompleteMultipartUploadRequest) (gofakes3.VersionID, string, error) {
	b.mu.RLock()
	u, err := b.upload(bucket, key, id)
	var parts []*fsPart
	if err == nil {
		for i, ip := range in.Parts {
			if i > 0 && ip.PartNumber <= in.Parts[i-1].PartNumber {
				err = gofakes3.ErrInvalidPartOrder
				break
			}
			p := u.parts[ip.PartNumber]
			if p == nil || strings.Trim(ip.ETag, `"`) != strings.Trim(p.ETag, `"`) {
				err = gofakes3.ErrorMessagef(gofakes3.ErrInvalidPart, "part %d is missing or its ETag differs", ip.PartNumber)
				break
			}
			parts = append(parts, p)
		}
	}
	b.mu.RUnlock()
	if err != nil {
		return "", "", err
	}
	if len(parts) == 0 {
		return "", "", gofakes3.ErrorMessage(gofakes3.ErrInvalidPart, "no parts given")
	}
	files := make([]io.Reader, 0, len(parts))
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}()
	etagSum := md5.New()
	for _, ip := range in.Parts {
		f, err := os.Open(b.partPath(id, ip.PartNumber))
		if err != nil {
			return "", "", err
		}
		closers = append(closers, f)
		files = append(files, f)
		raw, _ := hex.DecodeString(strings.Trim(ip.ETag, `"`))
		etagSum.Write(raw)
	}
	tmp, n, sum, err := writeTemp(b.bucketDir(bucket), io.MultiReader(files...), -1)
	if err != nil {
		return "", "", err
	}
	if err := b.commit(bucket, key, u.Metadata, tmp, n, sum, nil); err != nil {
		return "", "", err
	}
	b.mu.Lock()
	delete(b.uploads, id)
	b.mu.Unlock()
	_ = os.RemoveAll(b.uploadDir(id))
	return "", multipartETag(etagSum, len(parts)), nil
}

func multipartETag(h hash.Hash, n int) string {
	return fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(h.Sum(nil)), n)
}
