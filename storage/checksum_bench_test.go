package storage_test

import (
	"crypto/md5"
	"crypto/sha256"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"testing"
)

// BenchmarkWholeObjectChecksum measures the candidates for ferry's
// whole-object checksum on one 16 MiB part (the default part size), the
// way ferry hashes: one pass over a buffer already in memory. The AWS SDK
// computes CRC64NVME with hash/crc64 and the NVME polynomial, as here.
// docs/performance.md records the numbers and the choice (CRC32C).
//
//	go test -run '^$' -bench WholeObjectChecksum ./storage
func BenchmarkWholeObjectChecksum(b *testing.B) {
	buf := make([]byte, 16<<20)
	for i := range buf {
		buf[i] = byte(i*7 + i>>8)
	}
	for _, c := range []struct {
		name string
		new  func() hash.Hash
	}{
		{"CRC32C", func() hash.Hash { return crc32.New(crc32.MakeTable(crc32.Castagnoli)) }},
		{"CRC32", func() hash.Hash { return crc32.NewIEEE() }},
		{"CRC64NVME", func() hash.Hash { return crc64.New(crc64.MakeTable(0x9a6c9329ac4bc9b5)) }},
		{"MD5", md5.New},
		{"SHA-256", sha256.New},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				h := c.new()
				h.Write(buf)
				h.Sum(nil)
			}
		})
	}
}
