package faulttest

import (
	"crypto/sha256"
	"encoding/json"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

type listInput = s3.ListObjectsV2Input

func strPtr(s string) *string { return &s }

func sha(s string) [32]byte { return sha256.Sum256([]byte(s)) }
