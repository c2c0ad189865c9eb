package io.github.bigmodel.chatglm.tokenizer;

import java.util.Arrays;

/** A growable byte buffer (avoids boxing and ByteArrayOutputStream's synchronisation on the hot path). */
final class ByteSink {

    private byte[] data;
    private int size;

    ByteSink(int capacity) {
        data = new byte[Math.max(16, capacity)];
    }

    void add(byte b) {
        if (size == data.length) {
            data = Arrays.copyOf(data, data.length * 2);
        }
        data[size++] = b;
    }

    void add(byte[] src, int from, int to) {
        for (int i = from; i < to; i++) {
            add(src[i]);
        }
    }

    int size() {
        return size;
    }

    byte get(int i) {
        return data[i];
    }

    void truncate(int newSize) {
        size = newSize;
    }

    void clear() {
        size = 0;
    }

    byte[] toArray() {
        return Arrays.copyOf(data, size);
    }
}
