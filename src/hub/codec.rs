//! A gRPC codec that sends a prost request and hands back each response frame's bytes
//! undecoded. Subscribe is read with it so that the pipeline stores events exactly as the hub
//! sent them (unknown fields included) and an event that does not decode is still captured
//! and dead-lettered instead of failing the stream.

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes `Request` with prost; decodes responses to raw bytes.
pub struct RawResponseCodec<Request> {
    request: PhantomData<fn(Request)>,
}

impl<Request> Default for RawResponseCodec<Request> {
    fn default() -> Self {
        Self {
            request: PhantomData,
        }
    }
}

impl<Request: prost::Message + Send + 'static> Codec for RawResponseCodec<Request> {
    type Encode = Request;
    type Decode = Bytes;
    type Encoder = ProstRequestEncoder<Request>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstRequestEncoder {
            request: PhantomData,
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

pub struct ProstRequestEncoder<Request> {
    request: PhantomData<fn(Request)>,
}

impl<Request: prost::Message> Encoder for ProstRequestEncoder<Request> {
    type Item = Request;
    type Error = Status;

    fn encode(&mut self, item: Request, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("encoding the request: {error}")))
    }
}

pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
