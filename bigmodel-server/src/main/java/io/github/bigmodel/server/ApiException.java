package io.github.bigmodel.server;

/**
 * A request the server refuses, with the HTTP status and the fields of OpenAI's error object
 * ({@code {"error": {"message", "type", "param", "code"}}}).
 */
final class ApiException extends RuntimeException {

    private static final long serialVersionUID = 1L;

    final int status;
    final String type;
    final String param;
    final String code;

    ApiException(int status, String type, String param, String code, String message) {
        super(message);
        this.status = status;
        this.type = type;
        this.param = param;
        this.code = code;
    }

    /** 400 for a field: {@code param} names it as OpenAI does ({@code messages[1].content}). */
    static ApiException invalid(String param, String message) {
        return new ApiException(400, "invalid_request_error", param, "invalid_value", message);
    }

    static ApiException unsupported(String param, String message) {
        return new ApiException(400, "invalid_request_error", param, "unsupported_value", message);
    }
}
