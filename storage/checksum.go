package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"regexp"
	"strconv"
)

// MetaChecksum is the user-metadata key under which ferry records what an
// object's bytes should be: the CRC32C of the whole object (see Checksum),
// in S3's header format. Put writes it on every object; a multipart upload
// writes it when the value is known before the upload starts (a copy of an
// object that has one, a file hashed first). Reads and moves compare
// against it.
const MetaChecksum = "ferry-crc32c"

// castagnoli is the CRC32C table; hash/crc32 uses the CPU's CRC32
// instruction for it (SSE4.2, ARMv8), which is why ferry's whole-object
// checksum is a CRC32C: see docs/performance.md for the measurements.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// castagnoliReversed is the reflected CRC32C polynomial, for Append.
const castagnoliReversed = 0x82f63b78

// Checksum is the CRC32C (Castagnoli) of a run of bytes, with its length:
// the value S3 calls a full-object CRC32C checksum. The checksums of two
// adjacent runs combine into the checksum of both without the bytes
// (Append), so an upload's parts, hashed concurrently and in any order, or
// checkpointed by an earlier worker, give the exact whole-object checksum.
// The zero value is the checksum of no bytes.
type Checksum struct {
	CRC  uint32
	Size int64
}

// ChecksumOf returns the checksum of b.
func ChecksumOf(b []byte) Checksum {
	return Checksum{CRC: crc32.Checksum(b, castagnoli), Size: int64(len(b))}
}

// Update returns the checksum of c's bytes followed by b.
func (c Checksum) Update(b []byte) Checksum {
	return Checksum{CRC: crc32.Update(c.CRC, castagnoli, b), Size: c.Size + int64(len(b))}
}

// Append returns the checksum of c's bytes followed by next's.
func (c Checksum) Append(next Checksum) Checksum {
	return Checksum{CRC: crc32Combine(c.CRC, next.CRC, next.Size), Size: c.Size + next.Size}
}

// String is the CRC in S3's header format (x-amz-checksum-crc32c): the
// four bytes big-endian, base64.
func (c Checksum) String() string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], c.CRC)
	return base64.StdEncoding.EncodeToString(b[:])
}

// ParseChecksum reads a CRC in S3's header format for an object of size bytes.
func ParseChecksum(s string, size int64) (Checksum, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 4 {
		return Checksum{}, fmt.Errorf("checksum %q is not a base64 CRC32C", s)
	}
	return Checksum{CRC: binary.BigEndian.Uint32(b), Size: size}, nil
}

// Verify checks b, the whole of f's bytes as read, against what f records
// about them: its CRC32C (Checksum) when known, else its ETag when that is
// the MD5 of its bytes. It returns an *IntegrityError naming op when they
// differ, nil when they match or f records nothing usable.
func (f StoredFile) Verify(op string, b []byte) error {
	switch {
	case int64(len(b)) != f.Size:
		return fmt.Errorf("%s: %d bytes read, the object has %d", op, len(b), f.Size)
	case f.Checksum != "":
		if got := ChecksumOf(b).String(); got != f.Checksum {
			return &IntegrityError{Op: op, Check: MetaChecksum, Want: f.Checksum, Got: got}
		}
	case f.ETagIsMD5():
		sum := md5.Sum(b)
		if got := hex.EncodeToString(sum[:]); got != f.ETag {
			return &IntegrityError{Op: op, Check: "ETag (MD5)", Want: f.ETag, Got: got}
		}
	}
	return nil
}

// ChecksumObject reads the object at key (that version only, when etag is
// not empty: ErrSourceChanged otherwise) and returns the checksum of its
// bytes, in bounded memory: what a caller computes when the object records
// none.
func (s *S3) ChecksumObject(ctx context.Context, key, etag string) (Checksum, error) {
	rc, _, err := s.GetRangeIfMatch(ctx, key, etag, 0, -1)
	if err != nil {
		return Checksum{}, err
	}
	defer rc.Close()
	h := crc32.New(castagnoli)
	n, err := io.CopyBuffer(h, rc, make([]byte, 1<<20))
	if err != nil {
		return Checksum{}, fmt.Errorf("read %s: %w", s.display(key), err)
	}
	return Checksum{CRC: h.Sum32(), Size: n}, nil
}

// ChecksumReaderAt reads size bytes of r for their checksum, in 1 MiB
// reads (memory stays bounded), stopping when ctx ends: what an upload of
// a file records before its first part.
func ChecksumReaderAt(ctx context.Context, r io.ReaderAt, size int64) (Checksum, error) {
	buf := make([]byte, 1<<20)
	var sum Checksum
	for sum.Size < size {
		if err := ctx.Err(); err != nil {
			return Checksum{}, err
		}
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-sum.Size)], sum.Size)
		sum = sum.Update(buf[:n])
		if err != nil && !(errors.Is(err, io.EOF) && sum.Size == size) {
			return Checksum{}, fmt.Errorf("read at %d: %w", sum.Size, err)
		}
	}
	return sum, nil
}

// contentMD5 is the Content-MD5 header value of b.
func contentMD5(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// crc32Combine is zlib's crc32_combine for the CRC32C polynomial: the CRC
// of A followed by B from crc(A), crc(B) and len(B), by applying len(B)
// zero bits to crc(A) with a GF(2) matrix squared log2(len) times.
func crc32Combine(crc1, crc2 uint32, len2 int64) uint32 {
	if len2 <= 0 {
		return crc1
	}
	var even, odd [32]uint32
	odd[0] = castagnoliReversed // the operator for one zero bit
	row := uint32(1)
	for n := 1; n < 32; n++ {
		odd[n] = row
		row <<= 1
	}
	gf2Square(&even, &odd) // two zero bits
	gf2Square(&odd, &even) // four zero bits
	for {
		gf2Square(&even, &odd) // one zero byte, then 4, 16, ...
		if len2&1 != 0 {
			crc1 = gf2Times(&even, crc1)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
		gf2Square(&odd, &even)
		if len2&1 != 0 {
			crc1 = gf2Times(&odd, crc1)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
	}
	return crc1 ^ crc2
}

func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat *[32]uint32) {
	for n := range mat {
		square[n] = gf2Times(mat, mat[n])
	}
}

// ETagCheck is what an object's ETag says about its bytes when it records
// no checksum: the hex MD5 of the bytes (a single PutObject, not KMS or
// SSE-C encrypted), or, for a multipart upload, the MD5 of its parts' MD5s
// followed by "-" and the number of parts. The second can only be
// recomputed knowing where each part ends: Parts holds their sizes (nil for
// a plain MD5). See S3.ETagCheck.
type ETagCheck struct {
	ETag  string
	Parts []int64
}

// Name names the check in an *IntegrityError.
func (c *ETagCheck) Name() string {
	if c.Parts == nil {
		return "ETag (MD5)"
	}
	return "ETag (MD5 of part MD5s)"
}

// NewHash returns a hash to write the object's bytes into, in order.
func (c *ETagCheck) NewHash() *ETagHash {
	return &ETagHash{check: c, cur: md5.New()}
}

// Verify checks b, the whole of the object's bytes.
func (c *ETagCheck) Verify(op string, b []byte) error {
	h := c.NewHash()
	_, _ = h.Write(b)
	return h.Verify(op)
}

// ETagHash computes an object's ETag from its bytes, written in order, and
// the boundaries of its parts (ETagCheck.Parts). Bytes past the last part
// count in the last part's MD5, so a longer body never matches.
type ETagHash struct {
	check *ETagCheck
	cur   hash.Hash // the MD5 of the current part (of everything: plain MD5)
	sums  []byte    // the MD5s of the finished parts, concatenated
	part  int       // parts started
	left  int64     // bytes left in the current part
}

// Write hashes p. It never fails.
func (h *ETagHash) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if h.left == 0 && h.part < len(h.check.Parts) {
			if h.part > 0 {
				h.sums = h.cur.Sum(h.sums)
				h.cur.Reset()
			}
			h.left = h.check.Parts[h.part]
			h.part++
		}
		k := int64(len(p))
		if h.left > 0 {
			k = min(k, h.left)
			h.left -= k
		}
		h.cur.Write(p[:k])
		p = p[k:]
	}
	return n, nil
}

// ETag is the ETag of the bytes written so far.
func (h *ETagHash) ETag() string {
	if h.check.Parts == nil {
		return hex.EncodeToString(h.cur.Sum(nil))
	}
	all := h.cur.Sum(bytes.Clone(h.sums))
	sum := md5.Sum(all)
	return fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:]), h.part)
}

// Verify returns an *IntegrityError naming op when the bytes written do
// not give the object's ETag.
func (h *ETagHash) Verify(op string) error {
	if got := h.ETag(); got != h.check.ETag {
		return &IntegrityError{Op: op, Check: h.check.Name(), Want: h.check.ETag, Got: got}
	}
	return nil
}

// multipartETagRE is an ETag of the form AWS gives a multipart upload.
var multipartETagRE = regexp.MustCompile(`^[0-9a-f]{32}-([1-9][0-9]{0,4})$`)

// multipartETagParts is the number of parts f's ETag says it was uploaded
// in, when the ETag has the form of AWS's multipart ETag; else 0.
func (f StoredFile) multipartETagParts() int {
	m := multipartETagRE.FindStringSubmatch(f.ETag)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n > MaxParts {
		return 0
	}
	return n
}

// ETagCheck returns how f's bytes, read in order, can be checked against
// its ETag, for an object that records no checksum: by its MD5 when the
// ETag is one, by recomputing its multipart ETag when it has that form,
// the server is known to compute it that way (providerTable) and tells
// where the parts end (HeadObject with partNumber, one request per part,
// pinned to f's ETag). When there is no check to make it returns nil and
// why, for the caller to log: the bytes are then not verified as read.
func (s *S3) ETagCheck(ctx context.Context, f StoredFile) (*ETagCheck, string, error) {
	if f.ETagIsMD5() {
		return &ETagCheck{ETag: f.ETag}, "", nil
	}
	n := f.multipartETagParts()
	switch {
	case n == 0:
		return nil, fmt.Sprintf("its ETag %q is neither an MD5 nor a multipart ETag ferry can recompute", f.ETag), nil
	case f.Encryption != "" && !(f.Encryption == "AES256" && s.c.cfg.provider() == ProviderAWS):
		// KMS and SSE-C change the ETag everywhere; MinIO's SSE-S3 does
		// too, where AWS's keeps the MD5s.
		return nil, fmt.Sprintf("it is encrypted (%s), so its multipart ETag is not known to be the MD5 of its part MD5s", f.Encryption), nil
	case !s.c.quirks.multipartETags(f.LastModified):
		return nil, fmt.Sprintf("provider %s is not known to give multipart uploads the ETag AWS does (the MD5 of the part MD5s)", s.c.cfg.provider()), nil
	}
	parts, why, err := s.partSizes(ctx, f, n)
	if err != nil || parts == nil {
		return nil, why, err
	}
	return &ETagCheck{ETag: f.ETag, Parts: parts}, "", nil
}
