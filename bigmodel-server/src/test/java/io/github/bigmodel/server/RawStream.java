package io.github.bigmodel.server;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** A streaming request over a plain socket, so a test can stop reading and hang up mid-stream. */
final class RawStream implements AutoCloseable {

    private final Socket socket;
    private final BufferedReader in;
    final List<String> events = new ArrayList<>();

    RawStream(OpenAiServer server, String body) throws IOException {
        socket = new Socket(InetAddress.getLoopbackAddress(), server.port());
        socket.setSoTimeout(30_000);
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        OutputStream out = socket.getOutputStream();
        out.write(("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + "Content-Length: " + bytes.length + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
        out.write(bytes);
        out.flush();
        in = new BufferedReader(new InputStreamReader(socket.getInputStream(), StandardCharsets.UTF_8));
    }

    /** Reads until {@code n} events carrying content arrived (bounded by the socket timeout). */
    void readContentEvents(int n) throws IOException {
        int seen = 0;
        while (seen < n) {
            String line = in.readLine();
            if (line == null) {
                throw new IOException("stream ended after " + events.size() + " events");
            }
            if (line.startsWith("data: ")) {
                events.add(line.substring(6));
                if (line.contains("\"content\":\"") && !line.contains("\"content\":\"\"")) {
                    seen++;
                }
            }
        }
    }

    /** Reads every remaining event until the server closes the stream. */
    void readToEnd() throws IOException {
        String line;
        while ((line = in.readLine()) != null) {
            if (line.startsWith("data: ")) {
                events.add(line.substring(6));
            }
            if (line.equals("data: [DONE]")) {
                return;
            }
        }
    }

    @Override
    public void close() throws IOException {
        socket.close();
    }
}
