package storage

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
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
