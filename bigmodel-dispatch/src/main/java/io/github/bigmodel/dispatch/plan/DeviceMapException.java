package io.github.bigmodel.dispatch.plan;

/**
 * A device map, a budget or a planning request that cannot be honoured. Besides a readable message it records
 * which error accelerate raises in the same situation ({@code ValueError}, {@code KeyError}, {@code IndexError},
 * {@code RuntimeError}) and accelerate's own message text, so parity tests can compare both.
 *
 * <pre>{@code
 * try {
 *     map.checkDeviceMap(model);
 * } catch (DeviceMapException e) {
 *     e.accelerateType();      // "ValueError"
 *     e.getMessage();          // "The device_map provided does not give any device for ..."
 * }
 * }</pre>
 */
public class DeviceMapException extends IllegalArgumentException {

    private final String accelerateType;
    private final String accelerateMessage;

    /** An error whose message is accelerate's message. */
    public DeviceMapException(String accelerateType, String message) {
        this(accelerateType, message, message);
    }

    /** An error with a readable message and the (often terse) message accelerate gives. */
    public DeviceMapException(String accelerateType, String message, String accelerateMessage) {
        super(message);
        this.accelerateType = accelerateType;
        this.accelerateMessage = accelerateMessage;
    }

    /** The Python exception type accelerate raises here. */
    public String accelerateType() {
        return accelerateType;
    }

    /** The message accelerate's exception carries ({@code str(exc)}). */
    public String accelerateMessage() {
        return accelerateMessage;
    }
}
